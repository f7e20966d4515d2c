"""The building blocks every read of the results shares: the system-and-budget key, fetching
plain rows, which matches count, and scoping to one tournament.

The bottom of the read side: :mod:`arena.flags`, :mod:`arena.store.views` and
:mod:`arena.store.queries` build on it, and it imports none of them (so their imports run one
way, as tests/test_layering.py checks).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_
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
