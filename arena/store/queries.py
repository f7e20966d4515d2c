"""Leaderboard and browsing queries: plain functions over the database.

These back both ``arena leaderboard`` and the dashboard. They import neither torch nor Ray.
Robust quality follows AutoAttack's aggregation: per image, the worst case over all attacks,
then the mean over images; it is computed only over *counted* matches: status ``done`` and
``verified`` (re-scored by a fresh system in a fresh process). A done match whose ``verified``
is not true is *pending*; databases written before m003 have ``verified`` NULL everywhere and
need a rerun before anything counts.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Engine

from arena.store import models as m

GROUP = ("threat", "norm", "eps", "restorer", "defense")


def fetch(engine: Engine, stmt) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def counted():
    """The condition a match must meet for its scores to count: done and verified."""
    return and_(m.matches.c.status == "done", m.matches.c.verified.is_(True))


def scope(stmt, tournament_id: int | None):
    if tournament_id is None:
        return stmt
    return stmt.join(
        m.tournament_matches,
        and_(m.tournament_matches.c.match_id == m.matches.c.id,
             m.tournament_matches.c.tournament_id == tournament_id),
    )


def leaderboard(engine: Engine, tournament_id: int | None = None, threat: str | None = None) -> list[dict[str, Any]]:
    """One row per (threat, norm, eps, restorer, defense), ranked by robust PSNR within a budget
    where the system is complete (``status`` says why a row is not ranked).

    The one implementation lives in :func:`arena.store.views.leaderboard` (which also filters);
    this is its unfiltered form for the command line and ``arena report``.
    """
    from arena.store import views  # views builds on this module

    return views.leaderboard(engine, tournament_id, threat=threat)


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


def defense_costs(engine: Engine, tournament_id: int | None = None) -> list[dict[str, Any]]:
    mt = m.matches
    stmt = select(
        *(mt.c[g] for g in GROUP),
        func.avg(mt.c.defense_ms_per_mp).label("defense_ms_per_mp"),
        func.max(mt.c.peak_mem_mb).label("peak_mem_mb"),
    )
    stmt = scope(stmt, tournament_id).where(mt.c.status == "done").group_by(*(mt.c[g] for g in GROUP))
    return fetch(engine, stmt)


def flags_by_system(engine: Engine, tournament_id: int | None = None) -> dict[tuple, list[str]]:
    from arena.flags import tournament_flags  # the flags build on this module

    out: dict[tuple, list[str]] = {}
    for r in tournament_flags(engine, tournament_id):
        k = tuple(r[g] for g in GROUP)
        out.setdefault(k, []).append(f"{r['flag']}: {r['reason']}")
    return out


def matches(engine: Engine, tournament_id: int | None = None, status: str | None = None) -> list[dict[str, Any]]:
    mt = m.matches
    stmt = scope(select(mt), tournament_id)
    if status:
        stmt = stmt.where(mt.c.status == status)
    return fetch(engine, stmt.order_by(mt.c.id))


def status_counts(engine: Engine, tournament_id: int | None = None) -> dict[str, int]:
    mt = m.matches
    stmt = scope(select(mt.c.status, func.count().label("n")), tournament_id).group_by(mt.c.status)
    return {r["status"]: r["n"] for r in fetch(engine, stmt)}


def tournaments(engine: Engine) -> list[dict[str, Any]]:
    return fetch(engine, select(m.tournaments).order_by(m.tournaments.c.updated_at.desc()))


def latest_tournament_id(engine: Engine) -> int | None:
    rows = tournaments(engine)
    return rows[0]["id"] if rows else None


def unpack(row: dict[str, Any]):
    """A stored adversarial batch as a float32 array, checked against its hash."""
    import hashlib
    import zlib

    import numpy as np

    raw = zlib.decompress(row["data"])
    if hashlib.sha256(raw).hexdigest() != row["sha256"]:
        raise ValueError("stored adversarial batch does not match its hash")
    return np.frombuffer(raw, dtype=np.float32).reshape(row["shape"]).copy()


def adversarial(engine: Engine, match_id: int):
    """The adversarial batch a finished match was scored on (float32 (N, 3, H, W)), or None."""
    rows = fetch(engine, select(m.adversarial).where(m.adversarial.c.match_id == match_id))
    return unpack(rows[0]) if rows else None


def scores_of(engine: Engine, match_id: int) -> list[dict[str, Any]]:
    return fetch(engine, select(m.scores).where(m.scores.c.match_id == match_id).order_by(m.scores.c.image))


def samples_of(engine: Engine, match_id: int) -> list[dict[str, Any]]:
    return fetch(engine, select(m.samples).where(m.samples.c.match_id == match_id))


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table (no extra dependency) for the terminal."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 1 else f"{v:.2f}"
        return "" if v is None else str(v)
    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(b) for b in body)])
