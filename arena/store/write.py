"""The driver's writes: one transaction per result, idempotent by match key."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import uuid
import zlib
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from arena.store import models as m
from arena.store.queries import unpack


def _now() -> datetime:
    return datetime.now(timezone.utc)


def once_more_on_conflict(fn):
    """Run a read-then-insert writer again when a concurrent driver inserted the same unique key
    between its read and its insert: the second time it reads that row."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except IntegrityError:
            return fn(*args, **kwargs)
    return wrapper


@once_more_on_conflict
def upsert_tournament(engine: Engine, *, config_hash: str, name: str, config: dict, **fields: Any) -> int:
    """The tournament row for this config (created once, refreshed on every run)."""
    with engine.begin() as conn:
        row = conn.execute(
            select(m.tournaments.c.id).where(m.tournaments.c.config_hash == config_hash)
        ).first()
        values = dict(fields, name=name, config=config, updated_at=_now())
        if row:
            conn.execute(m.tournaments.update().where(m.tournaments.c.id == row.id).values(**values))
            return row.id
        return conn.execute(
            m.tournaments.insert().values(config_hash=config_hash, created_at=_now(), **values)
        ).inserted_primary_key[0]


def set_planned(engine: Engine, tournament_id: int, planned: int) -> None:
    """Record how many matches this run of the tournament plans (resumed ones included)."""
    with engine.begin() as conn:
        conn.execute(m.tournaments.update().where(m.tournaments.c.id == tournament_id).values(planned=planned))


@once_more_on_conflict
def record_entrants(engine: Engine, entrants: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        for e in entrants:
            key = hashlib.sha256(json.dumps(e, sort_keys=True, default=str).encode()).hexdigest()[:32]
            if conn.execute(select(m.entrants.c.id).where(m.entrants.c.entrant_key == key)).first():
                continue
            conn.execute(m.entrants.insert().values(entrant_key=key, **e))


def stored_statuses(engine: Engine, keys: list[str]) -> dict[str, str]:
    """Status of each of ``keys`` already in the database."""
    out: dict[str, str] = {}
    with engine.connect() as conn:
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            rows = conn.execute(
                select(m.matches.c.key, m.matches.c.status).where(m.matches.c.key.in_(chunk))
            )
            out.update({r.key: r.status for r in rows})
    return out


def link_matches(engine: Engine, tournament_id: int, keys: list[str]) -> None:
    """Record that the tournament includes already-stored matches (resumed or shared)."""
    with engine.begin() as conn:
        for i in range(0, len(keys), 500):
            ids = conn.execute(select(m.matches.c.id).where(m.matches.c.key.in_(keys[i : i + 500])))
            have = set(
                conn.execute(
                    select(m.tournament_matches.c.match_id).where(
                        m.tournament_matches.c.tournament_id == tournament_id
                    )
                ).scalars()
            )
            new = [{"tournament_id": tournament_id, "match_id": mid} for mid in ids.scalars() if mid not in have]
            if new:
                conn.execute(m.tournament_matches.insert(), new)


@once_more_on_conflict
def write_result(engine: Engine, tournament_id: int, match_row: dict[str, Any],
                 scores: list[dict[str, Any]], samples: list[dict[str, Any]] = (), adv=None) -> int:
    """Store one match with its scores and samples in a single transaction.

    A stored row with the same key is replaced only if it was a failure being retried; a
    finished one is kept as it is, so a rerun never duplicates or overwrites results.
    """
    with engine.begin() as conn:
        old = conn.execute(
            select(m.matches.c.id, m.matches.c.status).where(m.matches.c.key == match_row["key"])
        ).first()
        if old is not None:
            if old.status != "failed":
                return old.id
            conn.execute(delete(m.tournament_matches).where(m.tournament_matches.c.match_id == old.id))
            conn.execute(delete(m.scores).where(m.scores.c.match_id == old.id))
            conn.execute(delete(m.samples).where(m.samples.c.match_id == old.id))
            conn.execute(delete(m.adversarial).where(m.adversarial.c.match_id == old.id))
            conn.execute(delete(m.matches).where(m.matches.c.id == old.id))
        match_id = conn.execute(
            m.matches.insert().values(tournament_id=tournament_id, created_at=_now(), **match_row)
        ).inserted_primary_key[0]
        if scores:
            conn.execute(m.scores.insert(), [dict(s, match_id=match_id) for s in scores])
        if samples:
            conn.execute(m.samples.insert(), [dict(s, match_id=match_id) for s in samples])
        if adv is not None:
            conn.execute(m.adversarial.insert().values(match_id=match_id, **_pack(adv)))
        conn.execute(m.tournament_matches.insert().values(tournament_id=tournament_id, match_id=match_id))
    return match_id


def _pack(adv) -> dict[str, Any]:
    import numpy as np

    raw = np.ascontiguousarray(adv, dtype=np.float32).tobytes()
    return {"shape": list(adv.shape), "sha256": hashlib.sha256(raw).hexdigest(), "data": zlib.compress(raw, 1)}


def unverified(engine: Engine, tournament_id: int) -> list[dict[str, Any]]:
    """The tournament's done matches whose scores no fresh system has recomputed yet, with
    their per-image scores and stored adversarial batch."""
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(
            select(m.matches.c.id, m.matches.c.key, m.matches.c.spec, m.matches.c.seed)
            .join(m.tournament_matches, m.tournament_matches.c.match_id == m.matches.c.id)
            .where(m.tournament_matches.c.tournament_id == tournament_id,
                   m.matches.c.status == "done", m.matches.c.verified.is_not(True)))]
        for r in rows:
            r["scores"] = [dict(s._mapping) for s in conn.execute(
                select(m.scores).where(m.scores.c.match_id == r["id"]).order_by(m.scores.c.id))]
            adv = conn.execute(select(m.adversarial).where(m.adversarial.c.match_id == r["id"])).first()
            r["adv"] = unpack(dict(adv._mapping)) if adv is not None else None
    return rows


def set_verified(engine: Engine, match_id: int, fresh: list[dict[str, float]], gap: float) -> None:
    """The fresh system's scores become the ones that count."""
    with engine.begin() as conn:
        ids = conn.execute(select(m.scores.c.id).where(m.scores.c.match_id == match_id)
                           .order_by(m.scores.c.id)).scalars().all()
        for sid, values in zip(ids, fresh):
            conn.execute(m.scores.update().where(m.scores.c.id == sid).values(**values))
        conn.execute(m.matches.update().where(m.matches.c.id == match_id)
                     .values(verified=True, warm_gap_db=gap))


def set_judgement(engine: Engine, match_ids: list[int], status: str, blame: str, reason: str,
                  gap: float | None = None) -> None:
    """Overrule finished matches (a stateful system, a fault seen on re-scoring): their scores
    stay stored for inspection but no longer count."""
    with engine.begin() as conn:
        values = {"status": status, "blame": blame, "reason": reason, "verified": False}
        if gap is not None:
            values["warm_gap_db"] = gap
        conn.execute(m.matches.update().where(m.matches.c.id.in_(match_ids)).values(**values))


def relink(engine: Engine, tournament_id: int, keys: list[str]) -> None:
    """Make the tournament's matches exactly ``keys``: rows of older code or configs stay in the
    database but leave this tournament's leaderboard."""
    with engine.begin() as conn:
        ids = set()
        for i in range(0, len(keys), 500):
            ids |= set(conn.execute(select(m.matches.c.id).where(m.matches.c.key.in_(keys[i:i + 500]))).scalars())
        have = set(conn.execute(select(m.tournament_matches.c.match_id)
                                .where(m.tournament_matches.c.tournament_id == tournament_id)).scalars())
        stale = have - ids
        if stale:
            conn.execute(delete(m.tournament_matches).where(
                m.tournament_matches.c.tournament_id == tournament_id,
                m.tournament_matches.c.match_id.in_(list(stale))))
        new = [{"tournament_id": tournament_id, "match_id": i} for i in ids - have]
        if new:
            conn.execute(m.tournament_matches.insert(), new)


# --------------------------------------------------------------------------------------------
# Claims: drivers sharing one database split the work
# --------------------------------------------------------------------------------------------


def driver_id() -> str:
    """This driver's claim owner: host, process id and a nonce (a pid can be reused)."""
    return f"{platform.node()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_gone(owner: str) -> bool:
    """A claim's driver is known dead: it ran on this host and its process is gone. (A driver
    on another host is trusted until its lease ends.)"""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != platform.node() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim(engine: Engine, key: str, owner: str, lease_s: float, retry_failed: bool = False) -> str:
    """Claim match ``key`` for ``owner`` for ``lease_s`` seconds, atomically: ``"mine"`` (compute
    it), ``"stored"`` (a result is stored already: a failure counts unless ``retry_failed``) or
    ``"elsewhere"`` (another live driver holds an unexpired claim)."""
    now = _now()
    expires = now + timedelta(seconds=lease_s)
    with engine.begin() as conn:
        status = conn.execute(select(m.matches.c.status).where(m.matches.c.key == key)).scalar()
        if status is not None and (status != "failed" or not retry_failed):
            return "stored"
        held = conn.execute(select(m.claims.c.owner, m.claims.c.expires_at).where(m.claims.c.key == key)).first()
    if held is None:
        try:
            with engine.begin() as conn:
                conn.execute(m.claims.insert().values(key=key, owner=owner, expires_at=expires))
            return "mine"
        except IntegrityError:  # another driver claimed it between the read and the insert
            return claim(engine, key, owner, lease_s, retry_failed)
    expiry = held.expires_at if held.expires_at.tzinfo else held.expires_at.replace(tzinfo=timezone.utc)
    if held.owner != owner and expiry > now and not _owner_gone(held.owner):
        return "elsewhere"
    with engine.begin() as conn:  # ours already, expired, or its driver is dead: take it over
        taken = conn.execute(update(m.claims).where(m.claims.c.key == key, m.claims.c.owner == held.owner)
                             .values(owner=owner, expires_at=expires)).rowcount
    return "mine" if taken == 1 else claim(engine, key, owner, lease_s, retry_failed)


def renew_claims(engine: Engine, owner: str, lease_s: float) -> int:
    """Extend ``owner``'s claims to ``lease_s`` from now (a live driver's heartbeat); how many."""
    with engine.begin() as conn:
        return conn.execute(update(m.claims).where(m.claims.c.owner == owner)
                            .values(expires_at=_now() + timedelta(seconds=lease_s))).rowcount


def release_claims(engine: Engine, owner: str) -> None:
    """Drop ``owner``'s claims (the driver is leaving; what it did not store is free again)."""
    with engine.begin() as conn:
        conn.execute(delete(m.claims).where(m.claims.c.owner == owner))
