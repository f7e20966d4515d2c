"""Queries behind the dashboard and ``arena report``: plain functions over the database.

They build on :mod:`arena.store.sql` and import neither torch nor Ray. Every
function takes an engine and an optional tournament id (``None``: every stored match) and
returns plain rows (lists of dicts), so the callers can cache, tabulate or plot them freely.

Robust quality keeps the AutoAttack aggregation of the leaderboard: per image, the worst case
over the attacks that count, then the mean over images. Only done, verified matches count
(:func:`arena.store.sql.counted`). Filters narrow which matches count; an attack-kind
filter therefore changes the worst case, not just which rows are shown.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Any, Iterable

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.engine import Engine

from arena.display import attack_variant, one_line
from arena.flags import tournament_flags
from arena.store import models as m
from arena.store.sql import GROUP, counted, fetch, scope

BUDGET = ("threat", "norm", "eps")
#: budgets are stored as floats (8/255); two within this are the same budget
EPS_TOLERANCE = 1e-9
#: a leaderboard row's status, in the order its blocks are shown
STATUSES = ("ranked", "unverified", "unranked")
#: flags (arena/flags.py) saying a system's gradients may be masked
MASKING_FLAGS = ("bad-gradient", "gradient-attacks-beaten")
#: attack kinds that do not follow the attacked system's gradients
GRADIENT_FREE_KINDS = ("score-based", "decision-free", "transfer")
#: a match's shown status: the stored one, except that a done match not verified is pending
MATCH_STATUSES = ("done", "pending", "failed", "disqualified", "skipped")


def seed_spread(engine: Engine, tournament_id: int | None = None) -> dict[tuple, dict[str, float]]:
    """Per system and budget: robust PSNR computed seed by seed (per image, worst attack of that
    seed; mean over images), then its mean and sample standard deviation over the seeds."""
    s, mt = m.scores, m.matches
    per_image = scope(select(
        *(mt.c[g] for g in GROUP), mt.c.seed, s.c.image, func.min(func.coalesce(s.c.adv_psnr_worst, s.c.adv_psnr)).label("worst"),
    ).select_from(s.join(mt, s.c.match_id == mt.c.id)), tournament_id).where(counted()) \
        .group_by(*(mt.c[g] for g in GROUP), mt.c.seed, s.c.image).subquery()
    per_seed = select(*(per_image.c[g] for g in GROUP), per_image.c.seed,
                      func.avg(per_image.c.worst).label("robust")) \
        .group_by(*(per_image.c[g] for g in GROUP), per_image.c.seed)
    by_system: dict[tuple, list[float]] = {}
    for r in fetch(engine, per_seed):
        by_system.setdefault(tuple(r[g] for g in GROUP), []).append(r["robust"])
    out = {}
    for k, values in by_system.items():
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
        out[k] = {"robust_psnr_seed_mean": mean, "robust_psnr_seed_std": std}
    return out


COSTS = ("defense_ms_per_mp", "attack_ms_per_mp")
#: a leaderboard row's measured costs: they differ from run to run where the scores do not
MEASURED = (*COSTS, "peak_mem_mb")


def scores_only(rows: list[dict], digits: int | None = None) -> list[dict]:
    """Leaderboard rows without their measured costs (time, memory: they differ run to run),
    floats rounded to ``digits`` if given: what two runs of one tournament must agree on."""
    def value(v):
        return round(v, digits) if digits is not None and isinstance(v, float) else v

    return [{k: value(v) for k, v in r.items() if k not in MEASURED} for r in rows]


def defense_costs(engine: Engine, tournament_id: int | None = None) -> list[dict[str, Any]]:
    """Per system and budget, over its done matches: the median defense and attack time per
    megapixel (the defense timed on a second, warm pass; the attacks as they ran, so the
    median keeps one cold start from moving the row) and the largest peak memory."""
    mt = m.matches
    stmt = scope(select(*(mt.c[g] for g in GROUP), *(mt.c[c] for c in COSTS), mt.c.peak_mem_mb),
                 tournament_id).where(mt.c.status == "done")
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in fetch(engine, stmt):
        groups.setdefault(_key(r), []).append(r)
    out = []
    for k, rows in groups.items():
        row = dict(zip(GROUP, k))
        for c in COSTS:
            values = [r[c] for r in rows if r[c] is not None]
            row[c] = statistics.median(values) if values else None
        peaks = [r["peak_mem_mb"] for r in rows if r["peak_mem_mb"] is not None]
        row["peak_mem_mb"] = max(peaks) if peaks else None
        out.append(row)
    return out


def _key(row: dict[str, Any], names: Iterable[str] = GROUP) -> tuple:
    return tuple(row[n] for n in names)


def match_status(row: dict[str, Any]) -> str:
    """A stored match's shown status: ``pending`` for a done match not (yet) verified."""
    return "pending" if row["status"] == "done" and not row.get("verified") else row["status"]


def _where(stmt, **filters):
    """Narrow a select over ``matches`` to counted (done, verified) matches passing every filter."""
    return _narrow(stmt.where(counted()), **filters)


def _narrow(stmt, *, threat=None, norm=None, eps=None, restorers=None, defenses=None, attacks=None,
            attack_kinds=None):
    """Narrow a select over ``matches`` to matches of any status passing every given filter."""
    mt = m.matches
    for col, value in (("threat", threat), ("norm", norm)):
        if value is not None:
            stmt = stmt.where(mt.c[col] == value)
    if eps is not None:
        stmt = stmt.where(func.abs(mt.c.eps - eps) <= EPS_TOLERANCE)
    for col, values in (("restorer", restorers), ("defense", defenses), ("attack", attacks),
                        ("attack_kind", attack_kinds)):
        if values:
            stmt = stmt.where(mt.c[col].in_(list(values)))
    return stmt


def _groups(tournament_id: int | None, keys: tuple[str, ...], **filters):
    """Subquery over the counted matches: each with its ``keys`` and ``gid``, the smallest match
    id sharing them. Grouping the score rows by this integer instead of by the text columns
    themselves halves the cost of the big GROUP BY (SQLite sorts the keys)."""
    mt = m.matches
    stmt = select(mt.c.id, mt.c.attack, mt.c.seed, mt.c.frozen,
                  *(mt.c[k] for k in keys if k not in ("attack", "seed")),
                  func.min(mt.c.id).over(partition_by=[mt.c[k] for k in keys]).label("gid"))
    return _where(scope(stmt, tournament_id), **filters).subquery()


def robust_table(engine: Engine, tournament_id: int | None = None,
                 keys: tuple[str, ...] = GROUP, **filters) -> list[dict[str, Any]]:
    """Mean over images of the per-image worst case, one row per distinct ``keys``."""
    s, g = m.scores, _groups(tournament_id, keys, **filters)
    frozen = g.c.frozen.is_(True)

    def drawn(col):  # the column where the match drew the randomness, NULL where it froze it
        return case((frozen, None), else_=col)

    per_image = select(
        g.c.gid,
        func.avg(s.c.clean_psnr).label("clean_psnr"),
        func.avg(s.c.clean_ssim).label("clean_ssim"),
        # a random system's image counts at its worst of N draws, and at the fixed-randomness
        # score of the frozen matches; the expectation and the single draw of its clean pass
        # are shown beside them
        func.min(drawn(func.coalesce(s.c.adv_psnr_worst, s.c.adv_psnr))).label("worst"),
        func.min(case((frozen, s.c.adv_psnr))).label("robust_psnr_fixed"),
        func.min(case((frozen, s.c.adv_ssim), else_=func.coalesce(s.c.adv_ssim_worst, s.c.adv_ssim))).label("robust_ssim"),
        func.min(drawn(func.coalesce(s.c.adv_psnr_mean, s.c.adv_psnr))).label("robust_psnr_mean"),
        func.min(drawn(s.c.adv_psnr)).label("robust_psnr_single"),
        func.count(func.distinct(g.c.attack)).label("n_attacks"),
        func.count(func.distinct(g.c.seed)).label("n_seeds"),
    ).select_from(s.join(g, s.c.match_id == g.c.id)).group_by(g.c.gid, s.c.image).subquery()
    w, f = per_image.c.worst, per_image.c.robust_psnr_fixed
    robust = case((f.is_(None), w), (w.is_(None), f), (w < f, w), else_=f)  # per image, the lower
    per_group = select(
        per_image.c.gid,
        func.avg(per_image.c.clean_psnr).label("clean_psnr"),
        func.avg(per_image.c.clean_ssim).label("clean_ssim"),
        func.avg(robust).label("robust_psnr"),
        func.avg(per_image.c.robust_ssim).label("robust_ssim"),
        func.avg(per_image.c.worst).label("robust_psnr_worst"),
        func.avg(per_image.c.robust_psnr_mean).label("robust_psnr_mean"),
        func.avg(per_image.c.robust_psnr_fixed).label("robust_psnr_fixed"),
        func.avg(per_image.c.robust_psnr_single).label("robust_psnr_single"),
        func.count().label("n_images"),
        func.max(per_image.c.n_attacks).label("n_attacks"),
        func.max(per_image.c.n_seeds).label("n_seeds"),
    ).group_by(per_image.c.gid).subquery()
    names = select(g.c.gid, *(g.c[k] for k in keys)).distinct().subquery()
    stmt = select(*(names.c[k] for k in keys), *(c for c in per_group.c if c.name != "gid")).select_from(
        per_group.join(names, names.c.gid == per_group.c.gid))
    return fetch(engine, stmt)


def flags(engine: Engine, tournament_id: int | None = None) -> list[dict[str, Any]]:
    """The tournament's sanity flags: derived from its stored results, and `arena verify`'s."""
    return tournament_flags(engine, tournament_id)


def match_stats(engine: Engine, tournament_id: int | None = None, **filters) -> list[dict[str, Any]]:
    """Per finished match: what it was, what it cost, and the sums of its per-image scores.

    Scores are summed per match in one pass over the ``match_id`` index; every per-attack mean
    is then a ratio of sums over a few hundred rows instead of a sort of every score row.
    """
    s, mt = m.scores, m.matches
    sums = select(
        s.c.match_id,
        func.count().label("n_scores"),
        func.sum(s.c.clean_psnr).label("sum_clean_psnr"),
        func.sum(s.c.adv_psnr).label("sum_adv_psnr"),
        func.sum(s.c.clean_ssim - s.c.adv_ssim).label("sum_damage_ssim"),
        func.sum(s.c.queries).label("sum_queries"),
    ).group_by(s.c.match_id).subquery()
    stmt = select(
        mt.c.id, *(mt.c[g] for g in GROUP), mt.c.attack, mt.c.attack_kind, mt.c.seed,
        mt.c.time_attack_s, mt.c.gradient_calls, mt.c.queries_limit,
        *(c for c in sums.c if c.name != "match_id"),
    ).select_from(mt.join(sums, sums.c.match_id == mt.c.id))
    return fetch(engine, _where(scope(stmt, tournament_id), **filters))


def _attack_means(stats: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple, dict[str, Any]]:
    """Per ``keys``: mean adversarial PSNR and damage over every score row (as
    a plain mean over score rows), and mean cost over matches."""
    acc: dict[tuple, dict[str, Any]] = {}
    for r in stats:
        a = acc.setdefault(_key(r, keys), {**{k: r[k] for k in keys}, "attack_kind": r["attack_kind"],
                                           "n": 0, "clean": 0.0, "adv": 0.0, "dssim": 0.0, "queries": 0.0,
                                           "times": [], "grads": [], "limit": None, "n_matches": 0})
        a["n"] += r["n_scores"]
        a["clean"] += r["sum_clean_psnr"]
        a["adv"] += r["sum_adv_psnr"]
        a["dssim"] += r["sum_damage_ssim"]
        a["queries"] += r["sum_queries"] or 0
        a["n_matches"] += 1
        a["times"] += [r["time_attack_s"]] if r["time_attack_s"] is not None else []
        a["grads"] += [r["gradient_calls"]] if r["gradient_calls"] is not None else []
        a["limit"] = max(a["limit"] or 0, r["queries_limit"] or 0) or None
    out = {}
    for k, a in acc.items():
        n = a["n"]
        out[k] = {**{f: a[f] for f in (*keys, "attack_kind", "n_matches")},
                  "adv_psnr": a["adv"] / n, "damage_psnr": (a["clean"] - a["adv"]) / n,
                  "damage_ssim": a["dssim"] / n, "queries": a["queries"] / n,
                  "time_attack_s": sum(a["times"]) / len(a["times"]) if a["times"] else None,
                  "gradient_calls": sum(a["grads"]) / len(a["grads"]) if a["grads"] else None,
                  "queries_limit": a["limit"]}
    return out


def leaderboard(engine: Engine, tournament_id: int | None = None, *, threat: str | None = None,
                restorers: Iterable[str] | None = None, defenses: Iterable[str] | None = None,
                attacks: Iterable[str] | None = None,
                attack_kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The leaderboard: robust quality per system and budget, ranked, with filters.

    Restorer and defense filters only hide systems; attack and attack-kind filters choose
    which attacks count toward each image's worst case (and which attack is named worst).
    Flags about an attack that does not count are left out.
    """
    filters = dict(threat=threat, restorers=restorers, defenses=defenses, attacks=attacks,
                   attack_kinds=attack_kinds)
    rows = robust_table(engine, tournament_id, GROUP, **filters)
    standing = standings(engine, tournament_id, threat=threat, restorers=restorers, defenses=defenses)
    have = {_key(r) for r in rows}
    rows += [_unscored(k) for k in standing if k not in have]  # a failing system stays visible
    per_attack = _attack_means(match_stats(engine, tournament_id, **filters), (*GROUP, "attack"))
    worst = _worst_attack(per_attack.values())
    counted_attacks = {k[-1] for k in per_attack}
    costs = {_key(r): r for r in defense_costs(engine, tournament_id)}
    spread = seed_spread(engine, tournament_id)
    flagged: dict[tuple, list[str]] = {}
    for f in flags(engine, tournament_id):
        if f["attack"] and (attacks or attack_kinds) and f["attack"] not in counted_attacks:
            continue
        who = f" ({f['attack']})" if f["attack"] else ""
        flagged.setdefault(_key(f), []).append(f"{f['flag']}{who}: {f['reason']}")
    for r in rows:
        k = _key(r)
        scored = r["robust_psnr"] is not None
        r["drop_psnr"] = r["clean_psnr"] - r["robust_psnr"] if scored else None
        r["drop_ssim"] = r["clean_ssim"] - r["robust_ssim"] if scored else None
        r["worst_attack"] = worst.get(k, {}).get("attack")
        for c in (*COSTS, "peak_mem_mb"):
            r[c] = costs.get(k, {}).get(c)
        r["flags"] = "; ".join(flagged.get(k, []))
        r.update({"robust_psnr_seed_mean": None, "robust_psnr_seed_std": None, **spread.get(k, {})})
        r.update(standing[k])
        if not scored and r["status"] != "unranked":  # its matches all left out by an attack filter
            r["status"] = "unranked"
            r["why"] = "; ".join(filter(None, ["no done, verified match of the chosen attacks", r["why"]]))
    rows.sort(key=_board_order)
    return _rank(rows, lambda r: r["status"] == "ranked")


def _board_order(r: dict[str, Any]) -> tuple:
    """Per budget: ranked rows by robust PSNR, then the unverified block, then the unranked one."""
    robust = r["robust_psnr"]
    return (r["threat"], r["norm"], r["eps"], STATUSES.index(r["status"]),
            -robust if robust is not None else math.inf, r["restorer"], r["defense"])


def _unscored(k: tuple) -> dict[str, Any]:
    """The leaderboard row of a system with no counted match: its numbers are empty."""
    return {**dict(zip(GROUP, k)), **dict.fromkeys(("clean_psnr", "clean_ssim", "robust_psnr", "robust_ssim",
                                                     "robust_psnr_worst", "robust_psnr_mean",
                                                     "robust_psnr_fixed", "robust_psnr_single")),
            "n_images": 0, "n_attacks": 0, "n_seeds": 0}


def standings(engine: Engine, tournament_id: int | None = None, *, threat: str | None = None,
              restorers: Iterable[str] | None = None,
              defenses: Iterable[str] | None = None) -> dict[tuple, dict[str, Any]]:
    """Per system and budget: its match counts, its leaderboard status and one line of why.

    Every stored match of the system in the tournament counts here, whatever the attack
    filters: whether a system is complete does not depend on the view. ``planned`` is what
    the tournament stored; it equals done + pending + failed + disqualified + skipped.
    """
    mt = m.matches
    stmt = select(*(mt.c[g] for g in GROUP), mt.c.attack_kind, mt.c.status, mt.c.blame, mt.c.verified,
                  mt.c.reason, mt.c.converged, mt.c.escalated, mt.c.lower_bound)
    stmt = _narrow(scope(stmt, tournament_id), threat=threat, restorers=restorers, defenses=defenses)
    masked: dict[tuple, set[str]] = {}
    for f in flags(engine, tournament_id):
        if f["flag"] in MASKING_FLAGS:
            masked.setdefault(_key(f), set()).add(f["flag"])
    by_system: dict[tuple, list[dict[str, Any]]] = {}
    for r in fetch(engine, stmt.order_by(mt.c.id)):
        by_system.setdefault(_key(r), []).append(r)
    return {k: _standing(rows, masked.get(k, set())) for k, rows in by_system.items()}


def _standing(matches: list[dict[str, Any]], masked: set[str]) -> dict[str, Any]:
    """The rules of "complete or unranked": a failure not blamed on the attack, or a pending
    match, leaves the system unranked; masked gradients keep it unverified until an attack
    that does not need its gradients is done and verified."""
    counts = Counter(match_status(r) for r in matches)
    failures: dict[tuple, list[str | None]] = {}
    for r in matches:
        if r["status"] in ("failed", "disqualified"):
            failures.setdefault((r["status"], r["blame"]), []).append(r["reason"])
    against_system = {k: v for k, v in failures.items() if k[1] != "attack"}
    checked = any(match_status(r) == "done" and r["attack_kind"] in GRADIENT_FREE_KINDS for r in matches)
    incomplete = bool(against_system or counts["pending"] or not counts["done"])
    why = [f"{len(v)} {s} ({b or 'blame unknown'}): {one_line(v[0], 80)}" for (s, b), v in against_system.items()]
    if counts["pending"]:
        why.append(f"{counts['pending']} pending (not yet verified by a fresh re-score)")
    if not counts["done"] and not why:
        why.append("no done, verified match")
    if masked:
        names = ", ".join(sorted(masked))
        why.append(f"{names}: checked by a gradient-free attack" if checked else
                   f"{names}: no done, verified score-based, decision-free or transfer attack yet")
    why += [f"{len(v)} {s} (attack), not counted: {one_line(v[0], 80)}"
            for (s, b), v in failures.items() if b == "attack"]
    status = "unranked" if incomplete else "unverified" if masked and not checked else "ranked"
    return {"status": status, "planned": len(matches),
            **{s: counts[s] for s in MATCH_STATUSES},
            "attack_blamed": sum(len(v) for k, v in failures.items() if k[1] == "attack"),
            # the standard suite's protocol: iterative attacks whose last quarter still moved
            # the loss by more than 0.1 dB, and attacks rerun through BPDA
            "not_converged": sum(1 for r in matches if match_status(r) == "done" and r["converged"] is False),
            "escalated": sum(1 for r in matches if match_status(r) == "done" and r["escalated"]),
            "lower_bound": sum(1 for r in matches if match_status(r) == "done" and r["lower_bound"]),
            "why": "; ".join(why)}


def _worst_attack(per_system: Iterable[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Per system and budget, the attack row with the lowest mean adversarial PSNR."""
    worst: dict[tuple, dict[str, Any]] = {}
    for r in per_system:
        if _key(r) not in worst or r["adv_psnr"] < worst[_key(r)]["adv_psnr"]:
            worst[_key(r)] = r
    return worst


def _rank(rows: list[dict[str, Any]], ranked=lambda r: True) -> list[dict[str, Any]]:
    """Number the ``ranked`` rows 1, 2, ... within each budget (the others get ``None``);
    ``rows`` must be sorted by budget first."""
    prev, rank = None, 0
    for r in rows:
        if _key(r, BUDGET) != prev:
            prev, rank = _key(r, BUDGET), 0
        rank += 1 if ranked(r) else 0
        r["rank"] = rank if ranked(r) else None
    return rows


def budgets(engine: Engine, tournament_id: int | None = None) -> list[dict[str, Any]]:
    """Each (threat, norm, eps) with finished matches, and how many."""
    mt = m.matches
    stmt = select(mt.c.threat, mt.c.norm, mt.c.eps, func.count().label("n_matches"))
    stmt = _where(scope(stmt, tournament_id)).group_by(mt.c.threat, mt.c.norm, mt.c.eps)
    return sorted(fetch(engine, stmt), key=lambda r: _key(r, BUDGET))


def options(engine: Engine, tournament_id: int | None = None) -> dict[str, list[str]]:
    """The distinct values a filter can take, over finished matches."""
    mt = m.matches
    out = {}
    for col in ("threat", "norm", "restorer", "defense", "attack", "attack_kind"):
        stmt = _where(scope(select(mt.c[col]).distinct(), tournament_id))
        out[col] = sorted(v for (v,) in (tuple(r.values()) for r in fetch(engine, stmt)) if v is not None)
    return out


def attack_ranking(engine: Engine, tournament_id: int | None = None, *,
                   restorers: Iterable[str] | None = None,
                   defenses: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Attacks per budget, most damaging first: mean PSNR/SSIM damage over systems (each
    system weighs the same, whatever its images or seeds), how often each is the worst attack
    for a system, and its cost (time and gradient calls per match, queries per image)."""
    stats = match_stats(engine, tournament_id, restorers=restorers, defenses=defenses)
    per_system = _attack_means(stats, (*GROUP, "attack"))
    cost = _attack_means(stats, (*BUDGET, "attack"))
    wins = Counter(_key(r, (*BUDGET, "attack")) for r in _worst_attack(per_system.values()).values())
    means = ("adv_psnr", "damage_psnr", "damage_ssim")
    acc: dict[tuple, dict[str, Any]] = {}
    for r in per_system.values():
        k = _key(r, (*BUDGET, "attack"))
        a = acc.setdefault(k, {**cost[k], "n_systems": 0, **dict.fromkeys(means, 0.0)})
        for f in means:
            a[f] += r[f]
        a["n_systems"] += 1
    for k, a in acc.items():
        for f in means:
            a[f] /= a["n_systems"]
        a["worst_for"] = wins.get(k, 0)
    rows = sorted(acc.values(), key=lambda r: (r["threat"], r["norm"], r["eps"], -r["damage_psnr"]))
    return _rank(rows)


def matrix(engine: Engine, tournament_id: int | None = None, *, restorer: str, threat: str,
           norm: str, eps: float) -> list[dict[str, Any]]:
    """Attack x defense cells of robust PSNR for one restorer and budget.

    A cell is the robust PSNR against that attack alone (its seeds and variants pooled); the
    extra attack row ``ALL`` is the worst case over every attack, as on the leaderboard.
    """
    filters = dict(threat=threat, norm=norm, eps=eps, restorers=[restorer])
    cells = robust_table(engine, tournament_id, ("defense", "attack"), **filters)
    cells += [dict(r, attack="ALL") for r in robust_table(engine, tournament_id, ("defense",), **filters)]
    return sorted(cells, key=lambda r: (r["attack"] == "ALL", r["attack"], r["defense"]))


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


def convergence_curves(engine: Engine, tournament_id: int | None = None, *, norm: str,
                       restorers: Iterable[str] | None = None, defenses: Iterable[str] | None = None,
                       attacks: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Robust PSNR against attack iterations (CosPGD's figure): per counted iterative match on
    an MSE objective, the PSNR of its best mean loss so far after each gradient call, with
    whether the match converged (arena.match.NOT_CONVERGED_DB)."""
    mt = m.matches
    stmt = select(mt.c.threat, mt.c.eps, mt.c.restorer, mt.c.defense, mt.c.attack, mt.c.seed,
                  mt.c.frozen, mt.c.escalated, mt.c.spec, mt.c.trace, mt.c.converged, mt.c.moved_db)
    stmt = _where(scope(stmt, tournament_id), norm=norm, restorers=restorers, defenses=defenses,
                  attacks=attacks).where(mt.c.attack_kind == "white-box")
    out = []
    for r in fetch(engine, stmt.order_by(mt.c.id)):
        objective = ((r["spec"] or {}).get("attack") or {}).get("params", {}).get("objective")
        trace = r["trace"] or []
        if objective not in ("mse", "mse_clean") or len(trace) < 2:
            continue
        label = attack_variant(r["attack"], r["frozen"], r["escalated"])
        best = -math.inf
        for k, loss in enumerate(trace, 1):
            best = max(best, loss)
            if best > 0:
                out.append({"threat": r["threat"], "eps": r["eps"], "system": f"{r['restorer']} + {r['defense']}",
                            "attack": label, "seed": r["seed"], "iteration": k,
                            "robust_psnr": -10 * math.log10(best), "converged": r["converged"],
                            "moved_db": r["moved_db"]})
    return out


def system_matches(engine: Engine, tournament_id: int | None = None, *, threat: str, norm: str,
                   eps: float, restorer: str, defense: str) -> list[dict[str, Any]]:
    """The matches behind one leaderboard row, with their mean scores."""
    mt, s = m.matches, m.scores
    stmt = select(mt.c.id, mt.c.key, mt.c.attack, mt.c.attack_kind, mt.c.seed, mt.c.status,
                  mt.c.tournament_id, func.avg(s.c.adv_psnr).label("adv_psnr"),
                  func.avg(s.c.adv_ssim).label("adv_ssim"), func.count(s.c.id).label("n_images"))
    stmt = stmt.select_from(mt.outerjoin(s, s.c.match_id == mt.c.id))
    stmt = scope(stmt, tournament_id).where(
        mt.c.threat == threat, mt.c.norm == norm, func.abs(mt.c.eps - eps) <= EPS_TOLERANCE,
        mt.c.restorer == restorer, mt.c.defense == defense)
    return fetch(engine, stmt.group_by(mt.c.id).order_by(mt.c.attack, mt.c.seed))


def gallery_matches(engine: Engine, tournament_id: int | None = None) -> list[dict[str, Any]]:
    """Finished matches that saved sample images, with their mean clean and adversarial PSNR."""
    mt, s = m.matches, m.scores
    with_samples = select(m.samples.c.match_id).distinct().scalar_subquery()
    stmt = select(mt.c.id, mt.c.key, *(mt.c[g] for g in GROUP), mt.c.attack, mt.c.seed,
                  func.avg(s.c.clean_psnr).label("clean_psnr"), func.avg(s.c.adv_psnr).label("adv_psnr"))
    stmt = stmt.select_from(mt.join(s, s.c.match_id == mt.c.id)).where(mt.c.id.in_(with_samples))
    stmt = _where(scope(stmt, tournament_id)).group_by(mt.c.id)
    return fetch(engine, stmt.order_by(mt.c.threat, mt.c.norm, mt.c.eps, mt.c.restorer,
                                       mt.c.defense, mt.c.attack, mt.c.seed))


def gallery(engine: Engine, match_id: int) -> list[dict[str, Any]]:
    """Per sampled image of a match: its scores and the stored path of each saved picture
    (:func:`arena.display.sample_path` finds where it is now)."""
    samples = fetch(engine, select(m.samples).where(m.samples.c.match_id == match_id).order_by(m.samples.c.id))
    scores = {r["image"]: r for r in fetch(engine, select(m.scores).where(m.scores.c.match_id == match_id))}
    images: dict[str, dict[str, Any]] = {}
    for smp in samples:
        entry = images.setdefault(smp["image"], {"image": smp["image"], "paths": {},
                                                 **{k: v for k, v in scores.get(smp["image"], {}).items()
                                                    if k not in ("id", "match_id", "image")}})
        entry["paths"][smp["kind"]] = smp["path"]
    return list(images.values())


def problem_matches(engine: Engine, tournament_id: int | None = None) -> list[dict[str, Any]]:
    """Failed, disqualified and skipped matches with their reasons and errors."""
    mt = m.matches
    stmt = select(mt.c.id, mt.c.key, mt.c.tournament_id, mt.c.status, mt.c.blame, *(mt.c[g] for g in GROUP),
                  mt.c.attack, mt.c.seed, mt.c.reason, mt.c.error, mt.c.attempts, mt.c.device)
    stmt = scope(stmt, tournament_id).where(mt.c.status != "done")
    return fetch(engine, stmt.order_by(mt.c.status, mt.c.id))


def match_list(engine: Engine, tournament_id: int | None = None,
               statuses: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Matches of the given shown statuses (:data:`MATCH_STATUSES`; none given: every match),
    each with its blame, reason and full error as stored."""
    mt = m.matches
    pending = and_(mt.c.status == "done", mt.c.verified.is_not(True))
    stmt = select(mt.c.id, mt.c.key, mt.c.tournament_id, *(mt.c[g] for g in GROUP), mt.c.attack,
                  mt.c.attack_kind, mt.c.seed, mt.c.status, mt.c.blame, mt.c.verified, mt.c.reason,
                  mt.c.error, mt.c.attempts)
    stmt = scope(stmt, tournament_id)
    if statuses:
        stmt = stmt.where(or_(*(counted() if s == "done" else pending if s == "pending" else mt.c.status == s
                                for s in statuses)))
    rows = fetch(engine, stmt.order_by(mt.c.id))
    for r in rows:
        r["status"] = match_status(r)
    return rows


def match_detail(engine: Engine, key: str) -> dict[str, Any] | None:
    rows = fetch(engine, select(m.matches).where(m.matches.c.key == key))
    return rows[0] if rows else None
