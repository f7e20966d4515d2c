"""Sanity flags: signs that a robustness number may be unreliable (EVALUATION.md).

Derived for one tournament from what is stored with each of its done matches: the per-image
scores, the start gradient, the EOT draws the attack really used (``eot_used``), whether the
system's links declare randomness (``probes["random_declared"]``) and whether the attack is
minimum-norm (``minimum_norm``); matches are compared only within one seed. The driver stores
them after every run of the tournament, under its id, in ``flags``: one row per (system, budget,
attack, flag) with a plain-words reason, beside those `arena verify` found by re-running
matches. Pure SQL + Python over the database: no torch, no Ray.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from arena.display import attack_variant
from arena.store import models as m
from arena.store.sql import GROUP, fetch, scope

GRADIENT_KINDS = {"white-box", "transfer"}
#: dB by which a result must differ before a flag is raised (noise of a few images' PSNR).
TOLERANCE_DB = 0.05
ZERO_GRAD = 1e-12
#: What makes a flag one flag: its system, budget, attack and name.
KEY = ("threat", "norm", "eps", "restorer", "defense", "attack", "flag")
#: Flags written by `arena verify` rather than derived from the stored scores.
RERUN_FLAGS = ("not-converged",)


def _load(engine: Engine, tournament_id: int | None) -> tuple[list[dict[str, Any]], dict[int, dict[str, float]]]:
    mt, s = m.matches, m.scores
    done = scope(select(mt), tournament_id).where(mt.c.status == "done").order_by(mt.c.seed, mt.c.id)
    scores = scope(select(s.c.match_id, s.c.image, s.c.adv_psnr).select_from(s.join(mt, s.c.match_id == mt.c.id)),
                   tournament_id).where(mt.c.status == "done")
    per_image: dict[int, dict[str, float]] = defaultdict(dict)
    for r in fetch(engine, scores):
        per_image[r["match_id"]][r["image"]] = r["adv_psnr"]
    return fetch(engine, done), per_image


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def _objective(r: dict[str, Any]) -> str | None:
    return ((r.get("spec") or {}).get("attack") or {}).get("params", {}).get("objective")


def _random(r: dict[str, Any]) -> bool:
    return bool((r.get("probes") or {}).get("random_declared"))


def _eot_used(r: dict[str, Any]) -> int:
    # rows written before eot_used was stored have only the planned draws
    return r["eot_used"] if r.get("eot_used") is not None else (r.get("eot") or 1)


def compute_flags(engine: Engine, tournament_id: int | None = None) -> list[dict[str, Any]]:
    """Every flag the tournament's stored results raise (``None``: every stored match, as the
    views read it), each once."""
    matches, per_image = _load(engine, tournament_id)
    mean = {r["id"]: _mean(per_image[r["id"]].values()) for r in matches}
    flags: list[dict[str, Any]] = []

    def flag(r, name, reason, attack=None, eps=None):
        flags.append({"threat": r["threat"], "norm": r["norm"], "eps": r["eps"] if eps is None else eps,
                      "restorer": r["restorer"], "defense": r["defense"],
                      "attack": attack if attack is not None else r["attack"], "flag": name, "reason": reason})

    by_budget: dict[tuple, dict[str, dict]] = defaultdict(dict)  # one seed's matches at one budget
    by_attack_eps: dict[tuple, list[dict]] = defaultdict(list)  # one seed's matches of one attack
    for r in matches:
        by_budget[_system(r)][_variant(r)] = r
        by_attack_eps[(r["threat"], r["norm"], r["restorer"], r["defense"], _variant(r), r["seed"])].append(r)
        sg = r.get("start_grad")
        if sg and (not sg.get("finite", True) or sg.get("abs_mean", 1.0) <= ZERO_GRAD):
            flag(r, "bad-gradient", "zero or non-finite gradient at the start point "
                 f"(mean |grad| {sg.get('abs_mean')}, finite={sg.get('finite')})")
        if r["threat"] == "adaptive" and _eot_used(r) <= 1 and _random(r) and r["attack_kind"] in GRADIENT_KINDS \
                and not r.get("frozen"):  # a frozen match fixes the randomness on purpose
            flag(r, "no-eot", f"defense '{r['defense']}' is random but was attacked without EOT")

    for attacks in by_budget.values():
        fgsm = attacks.get("fgsm")
        for name, r in attacks.items():
            iterative = (r["attack_kind"] == "white-box" and (r.get("gradient_calls") or 0) > 1
                         and not r.get("minimum_norm") and _objective(r) == _objective(fgsm or {}))
            if fgsm is not None and name != "fgsm" and iterative \
                    and mean[r["id"]] > mean[fgsm["id"]] + TOLERANCE_DB:
                flag(r, "weaker-than-fgsm", f"iterative attack '{name}' leaves {mean[r['id']]:.2f} dB, "
                     f"single-step FGSM {mean[fgsm['id']]:.2f} dB at the same budget")
        for r, beaten in _beaten(attacks, per_image):
            flag(r, "gradient-attacks-beaten", f"{r['attack_kind']} attack '{r['attack']}' beats every "
                 f"gradient attack on {len(beaten)} of {len(per_image[r['id']])} images: gradients may be masked")

    for rows in by_attack_eps.values():
        rows = sorted(rows, key=lambda r: r["eps"])
        for small, big in zip(rows, rows[1:]):
            if mean[big["id"]] > mean[small["id"]] + TOLERANCE_DB:
                flag(big, "damage-not-growing", f"'{big['attack']}' leaves {mean[big['id']]:.2f} dB at "
                     f"eps={big['eps']:.4g} but {mean[small['id']]:.2f} dB at eps={small['eps']:.4g}")

    robust: dict[tuple, float] = {}  # per system, budget and seed
    for key, attacks in by_budget.items():
        images = set().union(*(per_image[r["id"]].keys() for r in attacks.values()))
        robust[key] = _mean(min(per_image[r["id"]].get(i, float("inf")) for r in attacks.values()) for i in images)
    for (threat, norm, eps, restorer, defense, seed), value in robust.items():
        oblivious = robust.get(("oblivious", norm, eps, restorer, defense, seed))
        if threat == "adaptive" and oblivious is not None and value > oblivious + TOLERANCE_DB:
            r = {"threat": threat, "norm": norm, "eps": eps, "restorer": restorer, "defense": defense}
            flag(r, "adaptive-weaker", f"adaptive robust PSNR {value:.2f} dB is better than the "
                 f"oblivious {oblivious:.2f} dB: the adaptive attack is not working", attack="")
    return _once(flags)


def _system(r: dict[str, Any]) -> tuple:
    """One system at one budget and seed: what the flags compare matches within."""
    return (r["threat"], r["norm"], r["eps"], r["restorer"], r["defense"], r["seed"])


def _variant(r: dict[str, Any]) -> str:
    spec = r.get("spec") or {}
    return attack_variant(r["attack"], spec.get("frozen"), spec.get("escalate"))


def _beaten(attacks: dict[str, dict[str, Any]], per_image) -> list[tuple[dict[str, Any], list[str]]]:
    """The gradient-free matches (score-based, decision-free, noise) of one system that beat
    every gradient attack on some image, with those images. Escalated reruns do not count:
    the flag stays on the row that called for them."""
    attacks = {k: r for k, r in attacks.items() if not (r.get("spec") or {}).get("escalate")}
    grad = [r for r in attacks.values() if r["attack_kind"] in GRADIENT_KINDS]
    out = []
    for r in attacks.values():
        if r["attack_kind"] in GRADIENT_KINDS or not grad:
            continue
        beaten = [i for i, v in per_image[r["id"]].items()
                  if all(v < per_image[g["id"]].get(i, float("inf")) - TOLERANCE_DB for g in grad)]
        if beaten:
            out.append((r, beaten))
    return out


def to_escalate(engine: Engine, tournament_id: int) -> dict[tuple, str]:
    """The standard suite's second escalation: per system, budget and seed whose suite matches
    are done (threat, norm, eps, restorer, defense, seed), why its white-box suite attacks must
    be rerun through BPDA: a gradient-free attack beat every gradient attack on an image."""
    matches, per_image = _load(engine, tournament_id)
    by_budget: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in matches:
        if r.get("suite") and r["threat"] == "adaptive":
            by_budget[_system(r)][_variant(r)] = r
    out = {}
    for key, attacks in by_budget.items():
        found = _beaten(attacks, per_image)
        if found:
            r, beaten = found[0]
            out[key] = (f"{r['attack_kind']} attack '{r['attack']}' beat every gradient attack on "
                        f"{len(beaten)} of {len(per_image[r['id']])} images")
    return out


def _once(flags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first of the flags sharing a KEY (several seeds may raise the same one)."""
    seen: set[tuple] = set()
    out = []
    for f in flags:
        k = tuple(f[c] for c in KEY)
        if k not in seen:
            seen.add(k)
            out.append(f)
    return out


def refresh_flags(engine: Engine, tournament_id: int) -> None:
    """Derive the tournament's flags from its stored results again and store them (the driver,
    after every run of it)."""
    store_flags(engine, compute_flags(engine, tournament_id), tournament_id=tournament_id)


def store_flags(engine: Engine, flags: list[dict[str, Any]], rerun: bool = False,
                tournament_id: int | None = None) -> None:
    """Replace the stored flags of one origin: those derived from the results of tournament
    ``tournament_id``, or (``rerun``) every flag found by re-running matches (`arena verify`
    samples the whole database anew), each stored under every tournament that includes the
    match it names by ``key``. A flag stored under no tournament is shown with every one."""
    mt, tm, fl = m.matches, m.tournament_matches, m.flags
    with engine.begin() as conn:
        kinds = fl.c.flag.in_(RERUN_FLAGS)
        mine = fl.c.tournament_id.is_(None) if tournament_id is None else fl.c.tournament_id == tournament_id
        conn.execute(delete(fl).where(kinds if rerun else (~kinds) & mine))
        seen = {tuple(r) for r in conn.execute(select(fl.c.tournament_id, *(fl.c[c] for c in KEY)))}
        for f in flags:
            tids = [tournament_id]
            if rerun and f.get("key") is not None:
                tids = conn.execute(select(tm.c.tournament_id).join(mt, mt.c.id == tm.c.match_id)
                                    .where(mt.c.key == f["key"])).scalars().all()
            for tid in tids:
                k = (tid, *(f[c] for c in KEY))
                if k not in seen:
                    seen.add(k)
                    conn.execute(fl.insert().values(tournament_id=tid, reason=f["reason"],
                                                    **{c: f[c] for c in KEY}))


def tournament_flags(engine: Engine, tournament_id: int | None = None) -> list[dict[str, Any]]:
    """The stored flags a tournament's leaderboard shows: its own and those stored under no
    tournament (``None``: every stored flag), each once."""
    fl = m.flags
    stmt = select(*(fl.c[c] for c in (*KEY, "reason"))).order_by(fl.c.id)
    if tournament_id is not None:
        stmt = stmt.where((fl.c.tournament_id == tournament_id) | fl.c.tournament_id.is_(None))
    return _once(fetch(engine, stmt))


def flags_by_system(engine: Engine, tournament_id: int | None = None) -> dict[tuple, list[str]]:
    out: dict[tuple, list[str]] = {}
    for r in tournament_flags(engine, tournament_id):
        k = tuple(r[g] for g in GROUP)
        out.setdefault(k, []).append(f"{r['flag']}: {r['reason']}")
    return out
