"""How far a tournament has got while it runs: stored counts, matches in flight, rate and ETA.

Read-only, no torch or Ray. "In flight" are the claims (arena/store/write.py) that drivers hold
on matches not yet stored; a driver drops its claims when it leaves, so a tournament is running
while any unexpired claim exists. The planned total is what the driver stored when it planned the
run (``tournaments.planned``, m006); with every tournament chosen, it is their sum.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from arena.store import models as m
from arena.store.sql import fetch, scope


def progress(engine: Engine, tournament_id: int | None = None) -> dict[str, Any]:
    mt, cl = m.matches, m.claims
    counts = {r["status"]: r["n"] for r in fetch(engine, scope(
        select(mt.c.status, func.count().label("n")), tournament_id).group_by(mt.c.status))}
    now = datetime.now(timezone.utc)
    claims = fetch(engine, select(cl.c.key, cl.c.expires_at).where(cl.c.key.not_in(select(mt.c.key))))
    running = sum(1 for c in claims if _aware(c["expires_at"]) > now)
    times = fetch(engine, scope(select(func.min(mt.c.started_at).label("first"),
                                       func.max(mt.c.finished_at).label("last")), tournament_id))[0]
    stored = sum(counts.values())
    tt = m.tournaments
    totals = select(func.sum(tt.c.planned).label("planned"))
    if tournament_id is not None:
        totals = totals.where(tt.c.id == tournament_id)
    planned = fetch(engine, totals)[0]["planned"]
    out = {"counts": counts, "stored": stored, "running": running, "planned": planned,
           "first_started": times["first"], "last_finished": times["last"], "now": time.time(),
           "rate_per_min": None, "eta_s": None}
    if running and times["first"] and times["last"] and times["last"] > times["first"]:
        finished = stored - counts.get("skipped", 0)
        out["rate_per_min"] = 60 * finished / (times["last"] - times["first"])
        if planned and out["rate_per_min"]:  # the rest at the rate so far
            out["eta_s"] = max(0, planned - stored) / out["rate_per_min"] * 60
    return out


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
