"""Browsing queries: plain functions over the database, for ``arena`` commands and the dashboard.

They import neither torch nor Ray. The leaderboard and the dashboard's tables live in
:mod:`arena.store.views` (one implementation, filters included); ``leaderboard`` here is a
name for it. Imports run one way: :mod:`arena.store.sql` <- :mod:`arena.flags` <- views <- this.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from arena.store import models as m
from arena.store import views
from arena.store.sql import GROUP, counted, fetch, scope  # noqa: F401  (re-exported)

#: the leaderboard's one home is :func:`arena.store.views.leaderboard` (filters included); this
#: name stays for the command line, ``arena report`` and scripts that read the unfiltered board
leaderboard = views.leaderboard


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
