"""How far a tournament has got while it runs: stored counts, matches in flight, rate and ETA.

Read-only, no torch or Ray. "In flight" are the claims (arena/store/write.py) that drivers hold
on matches not yet stored; a driver drops its claims when it leaves. The planned total is what
the driver stored when it planned the run (``tournaments.planned``, m006); with every
tournament chosen, it is their sum.

A tournament whose matches are not all stored and verified is *active* while a driver is
there: while it holds a claim (it keeps the claims of the matches it stored until it leaves, so
also while it re-scores the finished matches at the end), or, before its first claim (the
database just created, Ray starting, hardened weights being built), if it last wrote less than
:data:`ACTIVE_GRACE_S` ago. The dashboard refreshes its pages while one is active (dashboard/common.py).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.engine import Engine

from arena.store import models as m
from arena.store.sql import fetch, scope

#: seconds after its last write that an unfinished tournament without claims still counts as active
ACTIVE_GRACE_S = 90.0


def progress(engine: Engine, tournament_id: int | None = None) -> dict[str, Any]:
    mt, cl, tt = m.matches, m.claims, m.tournaments
    counts = {r["status"]: r["n"] for r in fetch(engine, scope(
        select(mt.c.status, func.count().label("n")), tournament_id).group_by(mt.c.status))}
    now = datetime.now(timezone.utc)
    stored_keys = {r["key"] for r in fetch(engine, select(mt.c.key).where(mt.c.key.in_(select(cl.c.key))))}
    held = [c["key"] for c in fetch(engine, select(cl.c.key, cl.c.expires_at)) if _aware(c["expires_at"]) > now]
    running = sum(1 for k in held if k not in stored_keys)
    unverified = and_(mt.c.status == "done", mt.c.verified.is_not(True))
    times = fetch(engine, scope(select(func.min(mt.c.started_at).label("first"),
                                       func.max(mt.c.finished_at).label("last"),
                                       func.sum(case((unverified, 1), else_=0)).label("unverified")),
                                tournament_id))[0]
    stored = sum(counts.values())
    totals = select(func.sum(tt.c.planned).label("planned"), func.max(tt.c.updated_at).label("updated"))
    if tournament_id is not None:
        totals = totals.where(tt.c.id == tournament_id)
    totals = fetch(engine, totals)[0]
    planned = totals["planned"]
    out = {"counts": counts, "stored": stored, "running": running, "held": len(held), "planned": planned,
           "unverified": times["unverified"] or 0, "first_started": times["first"],
           "last_finished": times["last"], "now": time.time(), "rate_per_min": None, "eta_s": None}
    # a driver creates the database (its migrations' time), then its tournament row, then results
    created = fetch(engine, select(func.max(m.schema_migrations.c.applied_at).label("t")))[0]["t"]
    writes = [times["last"], *(_aware(t).timestamp() for t in (totals["updated"], created) if t)]
    out["last_write"] = max((t for t in writes if t is not None), default=None)
    unfinished = planned is None or stored < planned or out["unverified"] > 0
    recent = out["last_write"] is not None and out["now"] - out["last_write"] < ACTIVE_GRACE_S
    out["active"] = bool(running) or (unfinished and (bool(held) or recent))
    if running and times["first"] and times["last"] and times["last"] > times["first"]:
        finished = stored - counts.get("skipped", 0)
        out["rate_per_min"] = 60 * finished / (times["last"] - times["first"])
        if planned and out["rate_per_min"]:  # the rest at the rate so far
            out["eta_s"] = max(0, planned - stored) / out["rate_per_min"] * 60
    return out


def stamp(engine: Engine) -> tuple:
    """A fingerprint of everything a driver writes that the pages show (matches, their status and
    verification, links, flags, claims, planned runs): it changes whenever a page would. The
    dashboard keys its caches on it and reruns a page when it moves."""
    mt, tm, fl, cl, tt = m.matches, m.tournament_matches, m.flags, m.claims, m.tournaments
    done = func.sum(case((mt.c.status == "done", 1), else_=0))
    verified = func.sum(case((mt.c.verified.is_(True), 1), else_=0))
    parts = [select(func.count(), func.max(mt.c.id), done, verified, func.max(mt.c.finished_at)),
             select(func.count()).select_from(tm), select(func.count(), func.max(fl.c.id)),
             select(func.count()).select_from(cl),
             select(func.count(), func.max(tt.c.updated_at), func.sum(tt.c.planned))]
    with engine.connect() as conn:
        return tuple(v for stmt in parts for v in conn.execute(stmt).one())


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
