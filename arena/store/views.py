"""Queries behind the dashboard and ``arena report``: plain functions over the database.

They build on :mod:`arena.store.queries` and, like it, import neither torch nor Ray. Every
function takes an engine and an optional tournament id (``None``: every stored match) and
returns plain rows (lists of dicts), so the callers can cache, tabulate or plot them freely.

Robust quality keeps the AutoAttack aggregation of the leaderboard: per image, the worst case
over the attacks that count, then the mean over images. Filters narrow which matches count;
an attack-kind filter therefore changes the worst case, not just which rows are shown.
"""

from __future__ import annotations

import shlex
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from arena.store import models as m
from arena.store.queries import GROUP, _rows, _scope, attack_damage, defense_costs

BUDGET = ("threat", "norm", "eps")
SAMPLE_KINDS = ("lq", "adv", "delta", "restored_clean", "restored_adv", "hq")
SAMPLE_TITLES = {
    "lq": "UDC input", "adv": "adversarial input", "delta": "perturbation (amplified)",
    "restored_clean": "restored (clean)", "restored_adv": "restored (adversarial)",
    "hq": "ground truth",
}


def _key(row: dict[str, Any], names: Iterable[str] = GROUP) -> tuple:
    return tuple(row[n] for n in names)


def _where(stmt, *, threat=None, norm=None, restorers=None, defenses=None, attacks=None,
           attack_kinds=None):
    """Narrow a select over ``matches`` to finished matches passing every given filter."""
    mt = m.matches
    stmt = stmt.where(mt.c.status == "done")
    for col, value in (("threat", threat), ("norm", norm)):
        if value is not None:
            stmt = stmt.where(mt.c[col] == value)
    for col, values in (("restorer", restorers), ("defense", defenses), ("attack", attacks),
                        ("attack_kind", attack_kinds)):
        if values:
            stmt = stmt.where(mt.c[col].in_(list(values)))
    return stmt


def _worst_per_image(tournament_id: int | None, keys: tuple[str, ...], **filters):
    """Subquery: per ``keys`` and image, mean clean score and worst adversarial score."""
    s, mt = m.scores, m.matches
    stmt = select(
        *(mt.c[k] for k in keys),
        s.c.image,
        func.avg(s.c.clean_psnr).label("clean_psnr"),
        func.avg(s.c.clean_ssim).label("clean_ssim"),
        func.min(s.c.adv_psnr).label("robust_psnr"),
        func.min(s.c.adv_ssim).label("robust_ssim"),
        func.count(func.distinct(mt.c.attack)).label("n_attacks"),
        func.count(func.distinct(mt.c.seed)).label("n_seeds"),
    ).select_from(s.join(mt, s.c.match_id == mt.c.id))
    stmt = _where(_scope(stmt, tournament_id), **filters)
    return stmt.group_by(*(mt.c[k] for k in keys), s.c.image).subquery()


def robust_table(engine: Engine, tournament_id: int | None = None,
                 keys: tuple[str, ...] = GROUP, **filters) -> list[dict[str, Any]]:
    """Mean over images of the per-image worst case, one row per distinct ``keys``."""
    pi = _worst_per_image(tournament_id, keys, **filters)
    stmt = select(
        *(pi.c[k] for k in keys),
        func.avg(pi.c.clean_psnr).label("clean_psnr"),
        func.avg(pi.c.clean_ssim).label("clean_ssim"),
        func.avg(pi.c.robust_psnr).label("robust_psnr"),
        func.avg(pi.c.robust_ssim).label("robust_ssim"),
        func.count().label("n_images"),
        func.max(pi.c.n_attacks).label("n_attacks"),
        func.max(pi.c.n_seeds).label("n_seeds"),
    ).group_by(*(pi.c[k] for k in keys))
    return _rows(engine, stmt)


def flags(engine: Engine) -> list[dict[str, Any]]:
    return _rows(engine, select(m.flags).order_by(m.flags.c.id))


def leaderboard(engine: Engine, tournament_id: int | None = None, *, threat: str | None = None,
                restorers: Iterable[str] | None = None, defenses: Iterable[str] | None = None,
                attacks: Iterable[str] | None = None,
                attack_kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The leaderboard of :func:`arena.store.queries.leaderboard`, with filters.

    Restorer and defense filters only hide systems; attack and attack-kind filters choose
    which attacks count toward each image's worst case (and which attack is named worst).
    Flags about an attack that does not count are left out.
    """
    filters = dict(threat=threat, restorers=restorers, defenses=defenses, attacks=attacks,
                   attack_kinds=attack_kinds)
    rows = robust_table(engine, tournament_id, GROUP, **filters)
    counted = [r for r in attack_damage(engine, tournament_id, by_system=True)
               if (not attacks or r["attack"] in attacks)
               and (not attack_kinds or r["attack_kind"] in attack_kinds)]
    worst = _worst_attack(counted)
    counted_attacks = {r["attack"] for r in counted}
    costs = {_key(r): r for r in defense_costs(engine, tournament_id)}
    flagged: dict[tuple, list[str]] = {}
    for f in flags(engine):
        if f["attack"] and (attacks or attack_kinds) and f["attack"] not in counted_attacks:
            continue
        who = f" ({f['attack']})" if f["attack"] else ""
        flagged.setdefault(_key(f), []).append(f"{f['flag']}{who}: {f['reason']}")
    for r in rows:
        k = _key(r)
        r["drop_psnr"] = r["clean_psnr"] - r["robust_psnr"]
        r["drop_ssim"] = r["clean_ssim"] - r["robust_ssim"]
        r["worst_attack"] = worst.get(k, {}).get("attack")
        r["defense_ms_per_mp"] = costs.get(k, {}).get("defense_ms_per_mp")
        r["peak_mem_mb"] = costs.get(k, {}).get("peak_mem_mb")
        r["flags"] = "; ".join(flagged.get(k, []))
    rows.sort(key=lambda r: (r["threat"], r["norm"], r["eps"], -r["robust_psnr"], r["restorer"], r["defense"]))
    return _rank(rows)


def _worst_attack(per_system: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Per system and budget, the attack row with the lowest mean adversarial PSNR."""
    worst: dict[tuple, dict[str, Any]] = {}
    for r in per_system:
        if _key(r) not in worst or r["adv_psnr"] < worst[_key(r)]["adv_psnr"]:
            worst[_key(r)] = r
    return worst


def _rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Number rows 1, 2, ... within each budget; ``rows`` must be sorted by budget first."""
    prev, rank = None, 0
    for r in rows:
        rank = 1 if _key(r, BUDGET) != prev else rank + 1
        r["rank"], prev = rank, _key(r, BUDGET)
    return rows


def budgets(engine: Engine, tournament_id: int | None = None) -> list[dict[str, Any]]:
    """Each (threat, norm, eps) with finished matches, and how many."""
    mt = m.matches
    stmt = select(mt.c.threat, mt.c.norm, mt.c.eps, func.count().label("n_matches"))
    stmt = _where(_scope(stmt, tournament_id)).group_by(mt.c.threat, mt.c.norm, mt.c.eps)
    return sorted(_rows(engine, stmt), key=lambda r: _key(r, BUDGET))


def options(engine: Engine, tournament_id: int | None = None) -> dict[str, list[str]]:
    """The distinct values a filter can take, over finished matches."""
    mt = m.matches
    out = {}
    for col in ("threat", "norm", "restorer", "defense", "attack", "attack_kind"):
        stmt = _where(_scope(select(mt.c[col]).distinct(), tournament_id))
        out[col] = sorted(v for (v,) in (tuple(r.values()) for r in _rows(engine, stmt)) if v is not None)
    return out


def attack_ranking(engine: Engine, tournament_id: int | None = None, *,
                   restorers: Iterable[str] | None = None,
                   defenses: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Attacks per budget, most damaging first: mean PSNR/SSIM damage over systems and
    images, how often each is the worst attack for a system, and its cost."""
    per_system = [r for r in attack_damage(engine, tournament_id, by_system=True)
                  if (not restorers or r["restorer"] in restorers) and (not defenses or r["defense"] in defenses)]
    wins = Counter(_key(r, (*BUDGET, "attack")) for r in _worst_attack(per_system).values())
    cost = _attack_cost(engine, tournament_id, restorers, defenses)
    means = ("adv_psnr", "damage_psnr", "damage_ssim")
    acc: dict[tuple, dict[str, Any]] = {}
    for r in per_system:
        k = _key(r, (*BUDGET, "attack"))
        a = acc.setdefault(k, {**dict(zip((*BUDGET, "attack"), k)), "attack_kind": r["attack_kind"],
                               "n_systems": 0, **dict.fromkeys(means, 0.0)})
        # a plain mean over systems: each weighs the same, whatever its images or seeds
        for f in means:
            a[f] += r[f]
        a["n_systems"] += 1
    for k, a in acc.items():
        for f in means:
            a[f] /= a["n_systems"]
        a["worst_for"] = wins.get(k, 0)
        a.update(cost.get(k, {}))
    rows = sorted(acc.values(), key=lambda r: (r["threat"], r["norm"], r["eps"], -r["damage_psnr"]))
    return _rank(rows)


def _attack_cost(engine, tournament_id, restorers, defenses) -> dict[tuple, dict[str, Any]]:
    mt, s = m.matches, m.scores
    keys = (mt.c.threat, mt.c.norm, mt.c.eps, mt.c.attack)
    per_match = select(*keys, func.avg(mt.c.time_attack_s).label("time_attack_s"),
                       func.avg(mt.c.gradient_calls).label("gradient_calls"),
                       func.max(mt.c.queries_limit).label("queries_limit"))
    per_match = _where(_scope(per_match, tournament_id), restorers=restorers, defenses=defenses)
    out = {_key(r, (*BUDGET, "attack")): r for r in _rows(engine, per_match.group_by(*keys))}
    queries = select(*keys, func.avg(s.c.queries).label("queries")).select_from(
        s.join(mt, s.c.match_id == mt.c.id))
    queries = _where(_scope(queries, tournament_id), restorers=restorers, defenses=defenses)
    for r in _rows(engine, queries.group_by(*keys)):
        out.setdefault(_key(r, (*BUDGET, "attack")), {})["queries"] = r["queries"]
    for r in out.values():
        for k in BUDGET + ("attack",):
            r.pop(k, None)
    return out


def matrix(engine: Engine, tournament_id: int | None = None, *, restorer: str, threat: str,
           norm: str, eps: float) -> list[dict[str, Any]]:
    """Attack x defense cells of robust PSNR for one restorer and budget.

    A cell is the robust PSNR against that attack alone (its seeds and variants pooled); the
    extra attack row ``ALL`` is the worst case over every attack, as on the leaderboard.
    """
    filters = dict(threat=threat, norm=norm, restorers=[restorer])
    cells = robust_table(engine, tournament_id, ("eps", "defense", "attack"), **filters)
    cells += [dict(r, attack="ALL") for r in robust_table(engine, tournament_id, ("eps", "defense"), **filters)]
    return sorted((r for r in cells if abs(r["eps"] - eps) <= 1e-9 * max(1.0, eps)),
                  key=lambda r: (r["attack"] == "ALL", r["attack"], r["defense"]))


def eps_curves(engine: Engine, tournament_id: int | None = None, *, norm: str,
               restorers: Iterable[str] | None = None, defenses: Iterable[str] | None = None,
               attacks: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Robust PSNR against ε per system, threat and attack (plus ``ALL``, the worst case over
    the chosen attacks), with ε = 0 holding the clean PSNR."""
    filters = dict(norm=norm, restorers=restorers, defenses=defenses, attacks=attacks)
    keys = ("threat", "eps", "restorer", "defense")
    per_attack = robust_table(engine, tournament_id, (*keys, "attack"), **filters)
    worst = [dict(r, attack="ALL") for r in robust_table(engine, tournament_id, keys, **filters)]
    clean: dict[tuple, list[float]] = {}
    for r in per_attack + worst:
        clean.setdefault(_key(r, ("threat", "restorer", "defense", "attack")), []).append(r["clean_psnr"])
    zero = [{"threat": k[0], "restorer": k[1], "defense": k[2], "attack": k[3], "eps": 0.0,
             "robust_psnr": sum(v) / len(v), "clean_psnr": sum(v) / len(v)} for k, v in clean.items()]
    rows = per_attack + worst + zero
    for r in rows:
        r["system"] = f"{r['restorer']} + {r['defense']}"
    return sorted(rows, key=lambda r: (r["threat"], r["system"], r["attack"], r["eps"]))


def system_matches(engine: Engine, tournament_id: int | None = None, *, threat: str, norm: str,
                   eps: float, restorer: str, defense: str) -> list[dict[str, Any]]:
    """The matches behind one leaderboard row, with their mean scores."""
    mt, s = m.matches, m.scores
    stmt = select(mt.c.id, mt.c.key, mt.c.attack, mt.c.attack_kind, mt.c.seed, mt.c.status,
                  mt.c.tournament_id, func.avg(s.c.adv_psnr).label("adv_psnr"),
                  func.avg(s.c.adv_ssim).label("adv_ssim"), func.count(s.c.id).label("n_images"))
    stmt = stmt.select_from(mt.outerjoin(s, s.c.match_id == mt.c.id))
    stmt = _scope(stmt, tournament_id).where(
        mt.c.threat == threat, mt.c.norm == norm, func.abs(mt.c.eps - eps) <= 1e-9,
        mt.c.restorer == restorer, mt.c.defense == defense)
    return _rows(engine, stmt.group_by(mt.c.id).order_by(mt.c.attack, mt.c.seed))


def gallery_matches(engine: Engine, tournament_id: int | None = None) -> list[dict[str, Any]]:
    """Finished matches that saved sample images, with their mean adversarial PSNR."""
    mt, s = m.matches, m.scores
    with_samples = select(m.samples.c.match_id).distinct().scalar_subquery()
    stmt = select(mt.c.id, mt.c.key, *(mt.c[g] for g in GROUP), mt.c.attack, mt.c.seed,
                  func.avg(s.c.adv_psnr).label("adv_psnr"))
    stmt = stmt.select_from(mt.join(s, s.c.match_id == mt.c.id)).where(mt.c.id.in_(with_samples))
    stmt = _where(_scope(stmt, tournament_id)).group_by(mt.c.id)
    return _rows(engine, stmt.order_by(mt.c.threat, mt.c.norm, mt.c.eps, mt.c.restorer,
                                       mt.c.defense, mt.c.attack, mt.c.seed))


def gallery(engine: Engine, match_id: int, db: str | Path | None = None) -> list[dict[str, Any]]:
    """Per sampled image of a match: its scores and the path of each saved picture."""
    samples = _rows(engine, select(m.samples).where(m.samples.c.match_id == match_id).order_by(m.samples.c.id))
    scores = {r["image"]: r for r in _rows(engine, select(m.scores).where(m.scores.c.match_id == match_id))}
    images: dict[str, dict[str, Any]] = {}
    for smp in samples:
        entry = images.setdefault(smp["image"], {"image": smp["image"], "paths": {},
                                                 **{k: v for k, v in scores.get(smp["image"], {}).items()
                                                    if k not in ("id", "match_id", "image")}})
        entry["paths"][smp["kind"]] = sample_path(smp["path"], db)
    return list(images.values())


def sample_path(stored: str, db: str | Path | None = None) -> Path:
    """Where a stored sample is now: as stored, or (for a relative path written from another
    working directory) under the SQLite database's folder, where the driver puts samples."""
    path = Path(stored)
    if path.is_file() or path.is_absolute() or db is None:
        return path
    db_file = _sqlite_file(str(db))
    if db_file is not None and "samples" in path.parts:
        moved = db_file.parent.joinpath(*path.parts[path.parts.index("samples"):])
        if moved.is_file():
            return moved
    return path


def _sqlite_file(db: str) -> Path | None:
    if "://" not in db:
        return Path(db).expanduser()
    if db.startswith("sqlite:///") and db != "sqlite:///:memory:":
        return Path(db[len("sqlite:///"):])
    return None


def problem_matches(engine: Engine, tournament_id: int | None = None) -> list[dict[str, Any]]:
    """Failed, disqualified and skipped matches with their reasons and errors."""
    mt = m.matches
    stmt = select(mt.c.id, mt.c.key, mt.c.tournament_id, mt.c.status, *(mt.c[g] for g in GROUP),
                  mt.c.attack, mt.c.seed, mt.c.reason, mt.c.error, mt.c.attempts, mt.c.device)
    stmt = _scope(stmt, tournament_id).where(mt.c.status != "done")
    return _rows(engine, stmt.order_by(mt.c.status, mt.c.id))


def match_detail(engine: Engine, key: str) -> dict[str, Any] | None:
    rows = _rows(engine, select(m.matches).where(m.matches.c.key == key))
    return rows[0] if rows else None


def reproduce_command(key: str, db: str | Path) -> str:
    """The shell command that recomputes one stored match."""
    return shlex.join(["arena", "reproduce", key, "--db", str(db)])
