"""End to end with the in-process executor: plan, run, store, resume, disqualify, fail."""

import pytest
from sqlalchemy import func, select

from arena.run.driver import run_tournament
from arena.store import models as m
from arena.store import queries, views
from arena.store.db import open_reader
from helpers import Boom, Cheat, NaNAttack, config, registry_with


def count(engine, table):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def test_tournament_runs_stores_and_resumes_without_duplicates(tmp_path, arena_registry):
    db = str(tmp_path / "a.db")
    t = config()
    report = run_tournament(t, db, executor="local", progress=False, registry=arena_registry)
    assert report.counts == {"done": 8}
    engine = open_reader(db)
    assert count(engine, m.matches) == 8
    assert count(engine, m.scores) == 8 * 4
    rows = views.leaderboard(engine)
    assert len(rows) == 4 and {r["n_attacks"] for r in rows} == {2}
    for r in rows:
        assert r["robust_psnr"] < r["clean_psnr"]
    match = queries.matches(engine)[0]
    assert match["code_version"] and match["device"] == "cpu" and match["time_attack_s"] > 0
    for row in queries.matches(engine):  # every component's version, under its own name
        assert set(row["versions"]) == {f"restorer:{row['restorer']}", f"attack:{row['attack']}",
                                        f"defense:{row['defense']}"}
        assert all(v.startswith("udc-arena ") for v in row["versions"].values())
    assert count(engine, m.samples) == 8 * 6  # one image per match, six views of it

    again = run_tournament(t, db, executor="local", progress=False, registry=arena_registry)
    assert again.counts == {} and again.resumed == 8
    assert count(engine, m.matches) == 8 and count(engine, m.scores) == 32
    assert count(engine, m.tournaments) == 1
    assert views.leaderboard(engine) == rows


def test_budget_violation_nan_and_raising_plugin_are_not_scored(tmp_path):
    registry = registry_with(Cheat, Boom, NaNAttack)
    db = str(tmp_path / "a.db")
    t = config(restorers=["tiny"], defenses=["none"], attacks=["cheat", "boom", "nan", "fgsm"])
    report = run_tournament(t, db, executor="local", progress=False, registry=registry)
    assert report.counts == {"disqualified": 2, "failed": 1, "done": 1}
    engine = open_reader(db)
    by_attack = {r["attack"]: r for r in queries.matches(engine)}
    assert by_attack["cheat"]["status"] == "disqualified"
    assert "exceeds eps" in by_attack["cheat"]["reason"]
    assert by_attack["nan"]["status"] == "disqualified" and "non-finite" in by_attack["nan"]["reason"]
    assert by_attack["boom"]["status"] == "failed" and "boom from a plugin" in by_attack["boom"]["error"]
    with engine.connect() as conn:
        scored = set(conn.execute(select(m.matches.c.attack).join(m.scores)).scalars())
    assert scored == {"fgsm"}
    (row,) = views.leaderboard(engine)
    assert row["n_attacks"] == 1  # the disqualified attacks never enter the worst case


def test_rerun_failed_retries_only_failures(tmp_path, monkeypatch):
    registry = registry_with(Boom)
    db = str(tmp_path / "a.db")
    t = config(restorers=["tiny"], defenses=["none"], attacks=["boom", "fgsm"])
    run_tournament(t, db, executor="local", progress=False, registry=registry)
    monkeypatch.setattr(Boom, "perturb", lambda self, target, lq, hq, budget, gen: lq.clone())
    plain = run_tournament(t, db, executor="local", progress=False, registry=registry)
    assert plain.counts == {} and plain.resumed == 2
    retry = run_tournament(t, db, executor="local", progress=False, registry=registry, rerun_failed=True)
    assert retry.counts == {"done": 1} and retry.resumed == 1
    assert queries.status_counts(open_reader(db)) == {"done": 2}


def test_config_error_writes_nothing(tmp_path, arena_registry):
    from arena.api import ConfigError

    db = tmp_path / "a.db"
    with pytest.raises(ConfigError):
        run_tournament(config(attacks=["nosuch"]), str(db), executor="local", registry=arena_registry)
    assert not db.exists()
