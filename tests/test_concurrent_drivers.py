"""Two drivers on one database (issue 16): schema creation and match claims are atomic, the
drivers split the work, every match is computed once, and the leaderboard equals one driver's.

Each driver is a separate process, started together on a fresh database (SQLite file, and a
new database on a real PostgreSQL server), as two users starting `arena run` at once would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from arena.store import models, views, write
from arena.store.db import open_reader, open_writer
from pg import postgres_server
from helpers import require_tool, scores_only

pytestmark = pytest.mark.slow

#: a driver process: waits for the start signal (after its imports), runs the tiny tournament
#: with an attack slow enough that the two drivers overlap, prints its counts as JSON
DRIVER = r"""
import json, os, sys, time
sys.path.insert(0, {tests!r})
from arena.api import Attack
from arena.run import driver
from arena.run.driver import run_tournament
from helpers import config, registry_with

rescored = []  # the matches this driver re-scored
_rescore = driver._rescore
def counting(engine, rows, *args):
    rescored.extend(r["key"] for r in rows)
    return _rescore(engine, rows, *args)
driver._rescore = counting

class Slow(Attack):
    name = "slow"
    def perturb(self, target, lq, hq, budget, generator):
        time.sleep(0.4)
        return lq.clone()

t = config(attacks=[{{"name": "slow"}}], budgets=[{{"norm": "linf", "eps": e}} for e in
           ("1/255", "2/255", "4/255", "8/255")], threat_models=["oblivious", "adaptive"])
registry = registry_with(Slow)
go = {go!r}
while not os.path.exists(go):
    time.sleep(0.05)
report = run_tournament(t, {db!r}, executor="local", progress=False, registry=registry)
print(json.dumps({{"planned": report.planned, "counts": dict(report.counts), "resumed": report.resumed,
                  "rescored": rescored}}))
"""


def drivers(db: str, tmp_path: Path, n: int = 2) -> list[dict]:
    go = tmp_path / "go"
    go.unlink(missing_ok=True)
    code = DRIVER.format(tests=str(Path(__file__).parent), go=str(go), db=db)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(n)]
    time.sleep(8)  # both have imported torch and the arena and wait at the start line
    go.touch()
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-3000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def check_split(db: str, reports: list[dict]) -> None:
    planned = reports[0]["planned"]
    done = [r["counts"].get("done", 0) for r in reports]
    assert sum(done) == planned, reports  # each match computed by exactly one driver
    assert all(d > 0 for d in done), reports  # and both drivers did some of the work
    for r in reports:  # what a driver did not compute, it saw stored by the other
        assert r["counts"].get("done", 0) + r["counts"].get("by another driver", 0) + r["resumed"] == planned, r
    rescored = [k for r in reports for k in r["rescored"]]
    engine = open_reader(db)
    with engine.connect() as conn:
        keys = conn.execute(select(models.matches.c.key)).scalars().all()
        assert len(keys) == len(set(keys)) == planned
        # each match re-scored once, by one of the two drivers, and every one of them verified
        assert sorted(rescored) == sorted(keys), [len(r["rescored"]) for r in reports]
        assert conn.execute(select(models.matches.c.verified)).scalars().all() == [True] * planned
        assert conn.execute(select(models.claims)).all() == []  # each driver released its claims
        names = conn.execute(select(models.schema_migrations.c.name)).scalars().all()
        assert len(names) == len(set(names))


def leaderboard(db: str) -> list[dict]:
    return scores_only(views.leaderboard(open_reader(db)), 6)


def test_two_drivers_on_one_fresh_sqlite_file_split_the_work(tmp_path):
    db = str(tmp_path / "shared.db")
    reports = drivers(db, tmp_path)
    check_split(db, reports)
    alone = str(tmp_path / "alone.db")
    (single,) = drivers(alone, tmp_path, n=1)
    assert single["counts"] == {"done": single["planned"]}
    assert leaderboard(db) == leaderboard(alone) != []


def test_two_drivers_on_one_fresh_postgres_database_split_the_work(tmp_path):
    with postgres_server() as server:
        server = require_tool(server, "PostgreSQL")
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS drivers"))
            conn.execute(text("CREATE DATABASE drivers"))
        admin.dispose()
        db = make_url(server).set(database="drivers").render_as_string(hide_password=False)
        reports = drivers(db, tmp_path)
        check_split(db, reports)


def test_a_claim_is_atomic_and_a_dead_drivers_claim_is_taken_over(tmp_path):
    engine = open_writer(str(tmp_path / "c.db"))
    a, b = write.driver_id(), write.driver_id()
    assert write.claim(engine, "k1", a, 60) == "mine"
    assert write.claim(engine, "k1", a, 60) == "mine"  # its own again
    assert write.claim(engine, "k1", b, 60) == "elsewhere"  # a live driver's unexpired claim
    assert write.claim(engine, "k2", b, -1) == "mine"  # a lease already over...
    assert write.claim(engine, "k2", a, 60) == "mine"  # ...is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    host = a.split(":")[0]
    assert write.claim(engine, "k3", f"{host}:{dead}:nonce", 3600) == "mine"
    assert write.claim(engine, "k3", b, 60) == "mine"  # its driver (this host, pid gone) is dead
    write.release_claims(engine, a)
    with engine.connect() as conn:
        assert sorted(conn.execute(select(models.claims.c.key)).scalars()) == ["k3"]


def test_a_running_driver_renews_its_claims_past_their_lease(tmp_path, monkeypatch):
    """A match that takes longer than the lease stays claimed while its driver lives (the
    heartbeat), so a driver on another host cannot take it over; once the driver has left, its
    claims are gone."""
    import threading

    from arena.api import Attack
    from arena.run import driver
    from helpers import config, registry_with

    class Sleepy(Attack):
        name = "sleepy"

        def perturb(self, target, lq, hq, budget, generator):
            time.sleep(3.0)  # six leases long
            return lq.clone()

    monkeypatch.setattr(driver, "CLAIM_LEASE_S", 0.5)
    db = str(tmp_path / "h.db")
    foreign = "another-host:1:nonce"  # on another host: only its lease can say it is gone
    seen: list[str] = []

    def other_driver() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with open_reader(db).connect() as conn:
                    held = conn.execute(select(models.claims.c.key)).scalars().first()
            except Exception:  # noqa: BLE001 - the database is not there yet
                held = None
            if held:
                time.sleep(1.5)  # three leases after the claim was made
                seen.append(write.claim(open_writer(db), held, foreign, 0.5))
                return
            time.sleep(0.05)

    t = config(attacks=["sleepy"], threat_models=["oblivious"], data={"name": "embedded", "images": 1, "size": 16})
    probe = threading.Thread(target=other_driver)
    probe.start()
    report = driver.run_tournament(t, db, executor="local", progress=False, registry=registry_with(Sleepy))
    probe.join()
    assert seen == ["elsewhere"]  # renewed: without the heartbeat the lease was over and it was "mine"
    assert report.counts["done"] == report.planned
    with open_reader(db).connect() as conn:
        assert conn.execute(select(models.claims.c.key)).scalars().all() == []
