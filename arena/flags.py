"""Sanity flags: signs that a robustness number may be unreliable (EVALUATION.md).

Computed from the stored results after every tournament and stored in ``flags``, one row per
(system, budget, attack, flag) with a plain-words reason. Pure SQL + Python over the database:
no torch, no Ray.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from arena.store import models as m

GRADIENT_KINDS = {"white-box", "transfer"}
#: dB by which a result must differ before a flag is raised (noise of a few images' PSNR).
TOLERANCE_DB = 0.05
ZERO_GRAD = 1e-12


def _load(engine: Engine) -> tuple[list[dict[str, Any]], dict[int, dict[str, float]]]:
    with engine.connect() as conn:
        matches = [dict(r._mapping) for r in conn.execute(select(m.matches).where(m.matches.c.status == "done"))]
        per_image: dict[int, dict[str, float]] = defaultdict(dict)
        for r in conn.execute(select(m.scores.c.match_id, m.scores.c.image, m.scores.c.adv_psnr)):
            per_image[r.match_id][r.image] = r.adv_psnr
    return matches, per_image


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def _objective(r: dict[str, Any]) -> str | None:
    return ((r.get("spec") or {}).get("attack") or {}).get("params", {}).get("objective")


def compute_flags(engine: Engine, random_defenses: set[str] = frozenset(),
                  minimum_norm: set[str] = frozenset()) -> list[dict[str, Any]]:
    """Every flag the stored results raise. ``random_defenses`` names defense links declared
    random; ``minimum_norm`` names minimum-norm attacks (not held to FGSM's damage)."""
    matches, per_image = _load(engine)
    mean = {r["id"]: _mean(per_image[r["id"]].values()) for r in matches}
    flags: list[dict[str, Any]] = []

    def flag(r, name, reason, attack=None, eps=None):
        flags.append({"threat": r["threat"], "norm": r["norm"], "eps": r["eps"] if eps is None else eps,
                      "restorer": r["restorer"], "defense": r["defense"],
                      "attack": attack if attack is not None else r["attack"], "flag": name, "reason": reason})

    by_budget: dict[tuple, dict[str, dict]] = defaultdict(dict)
    by_attack_eps: dict[tuple, list[dict]] = defaultdict(list)
    for r in matches:
        by_budget[(r["threat"], r["norm"], r["eps"], r["restorer"], r["defense"])][r["attack"]] = r
        by_attack_eps[(r["threat"], r["norm"], r["restorer"], r["defense"], r["attack"])].append(r)
        sg = r.get("start_grad")
        if sg and (not sg.get("finite", True) or sg.get("abs_mean", 1.0) <= ZERO_GRAD):
            flag(r, "bad-gradient", "zero or non-finite gradient at the start point "
                 f"(mean |grad| {sg.get('abs_mean')}, finite={sg.get('finite')})")
        if r["threat"] == "adaptive" and (r.get("eot") or 1) <= 1 and _is_random(r["defense"], random_defenses) \
                and r["attack_kind"] in GRADIENT_KINDS:
            flag(r, "no-eot", f"defense '{r['defense']}' is random but was attacked without EOT")

    for key, attacks in by_budget.items():
        fgsm = attacks.get("fgsm")
        for name, r in attacks.items():
            iterative = (r["attack_kind"] == "white-box" and (r.get("gradient_calls") or 0) > 1
                         and name not in minimum_norm and _objective(r) == _objective(fgsm or {}))
            if fgsm is not None and name != "fgsm" and iterative \
                    and mean[r["id"]] > mean[fgsm["id"]] + TOLERANCE_DB:
                flag(r, "weaker-than-fgsm", f"iterative attack '{name}' leaves {mean[r['id']]:.2f} dB, "
                     f"single-step FGSM {mean[fgsm['id']]:.2f} dB at the same budget")
        grad = [r for r in attacks.values() if r["attack_kind"] in GRADIENT_KINDS]
        other = [r for r in attacks.values() if r["attack_kind"] not in GRADIENT_KINDS]
        for r in other:
            imgs = per_image[r["id"]]
            beaten = [i for i, v in imgs.items()
                      if grad and all(v < per_image[g["id"]].get(i, float("inf")) - TOLERANCE_DB for g in grad)]
            if beaten:
                flag(r, "gradient-attacks-beaten", f"{r['attack_kind']} attack '{r['attack']}' beats every "
                     f"gradient attack on {len(beaten)} of {len(imgs)} images: gradients may be masked")

    for key, rows in by_attack_eps.items():
        rows = sorted(rows, key=lambda r: r["eps"])
        for small, big in zip(rows, rows[1:]):
            if mean[big["id"]] > mean[small["id"]] + TOLERANCE_DB:
                flag(big, "damage-not-growing", f"'{big['attack']}' leaves {mean[big['id']]:.2f} dB at "
                     f"eps={big['eps']:.4g} but {mean[small['id']]:.2f} dB at eps={small['eps']:.4g}")

    robust: dict[tuple, float] = {}
    for (threat, norm, eps, restorer, defense), attacks in by_budget.items():
        images = set().union(*(per_image[r["id"]].keys() for r in attacks.values()))
        robust[(threat, norm, eps, restorer, defense)] = _mean(
            min(per_image[r["id"]].get(i, float("inf")) for r in attacks.values()) for i in images)
    for (threat, norm, eps, restorer, defense), value in robust.items():
        oblivious = robust.get(("oblivious", norm, eps, restorer, defense))
        if threat == "adaptive" and oblivious is not None and value > oblivious + TOLERANCE_DB:
            r = {"threat": threat, "norm": norm, "eps": eps, "restorer": restorer, "defense": defense}
            flag(r, "adaptive-weaker", f"adaptive robust PSNR {value:.2f} dB is better than the "
                 f"oblivious {oblivious:.2f} dB: the adaptive attack is not working", attack="")
    return flags


def _is_random(defense_label: str, random_defenses: set[str]) -> bool:
    return any(link in random_defenses for link in defense_label.split(">"))


#: Flags written by `arena verify` rather than recomputed from the stored scores.
RERUN_FLAGS = ("not-converged",)


def store_flags(engine: Engine, flags: list[dict[str, Any]], rerun: bool = False) -> None:
    """Replace the stored flags of one origin with these: those computed from the scores after
    each run, or (``rerun``) those found by re-running matches."""
    with engine.begin() as conn:
        kinds = m.flags.c.flag.in_(RERUN_FLAGS)
        conn.execute(delete(m.flags).where(kinds if rerun else ~kinds))
        seen = set()
        for f in flags:
            k = tuple(f[c] for c in ("threat", "norm", "eps", "restorer", "defense", "attack", "flag"))
            if k not in seen:
                seen.add(k)
                conn.execute(m.flags.insert().values(**f))
