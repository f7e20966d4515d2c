"""Where the arena's parts meet: flags per tournament and seed from stored traits, hardening that
fails like a match, validation before anything runs, and one base error for the CLI."""

import time

import pytest
from click.testing import CliRunner

from arena.api import ArenaError, ConfigError, Defense
from arena.cli import main
from arena.data import load_data
from arena.flags import compute_flags, flags_by_system, refresh_flags, store_flags
from arena.plan import plan
from arena.plugins import load_registry
from arena.run.driver import run_tournament
from arena.store import queries, views, write
from arena.store.db import open_reader, open_writer
from helpers import config, registry_with


def add(engine, tid, key, attack, scores, *, restorer="r", eps=0.03, seed=0, **extra):
    """One done, verified match at linf ``eps``; ``scores``: adversarial PSNR per image."""
    row = {"key": key, "restorer": restorer, "defense": "none", "attack": attack, "attack_kind": "white-box",
           "threat": "oblivious", "norm": "linf", "eps": eps, "seed": seed, "spec": {}, "status": "done",
           "verified": True, **extra}
    write.write_result(engine, tid, row, [{"image": f"i{i}", "clean_psnr": 30.0, "clean_ssim": 0.9,
                                           "adv_psnr": v, "adv_ssim": v / 40} for i, v in enumerate(scores)])


def tournament(engine, name):
    return write.upsert_tournament(engine, config_hash=name, name=name, config={})


def test_flags_compare_matches_within_one_seed(tmp_path):
    engine = open_writer(tmp_path / "a.db")
    tid = tournament(engine, "seeds")
    # r1: PGD is weaker than FGSM under seed 0 only (pooled, the last seed hid it)
    add(engine, tid, "a0", "fgsm", (20, 20), restorer="r1", seed=0)
    add(engine, tid, "a1", "pgd", (22, 22), restorer="r1", seed=0, gradient_calls=10)
    add(engine, tid, "a2", "fgsm", (20, 20), restorer="r1", seed=1)
    add(engine, tid, "a3", "pgd", (18, 18), restorer="r1", seed=1, gradient_calls=10)
    # r2: within each seed the damage grows with eps; across seeds 25 dB > 20 dB at the same eps
    add(engine, tid, "b0", "pgd", (20, 20), restorer="r2", eps=0.01, seed=0)
    add(engine, tid, "b1", "pgd", (25, 25), restorer="r2", eps=0.01, seed=1)
    add(engine, tid, "b2", "pgd", (18, 18), restorer="r2", eps=0.03, seed=0)
    add(engine, tid, "b3", "pgd", (22, 22), restorer="r2", eps=0.03, seed=1)
    flags = compute_flags(engine, tid)
    assert {(f["restorer"], f["attack"], f["flag"]) for f in flags} == {("r1", "pgd", "weaker-than-fgsm")}
    (weaker,) = flags
    assert "leaves 22.00 dB, single-step FGSM 20.00 dB" in weaker["reason"]


def test_no_eot_reads_the_stored_draws_and_random_trait(tmp_path):
    engine = open_writer(tmp_path / "a.db")
    tid = tournament(engine, "eot")
    adaptive = {"threat": "adaptive", "eot": 4, "eot_used": 1}  # planned four draws, used one
    add(engine, tid, "k0", "pgd", (20,), restorer="random", probes={"random_declared": True}, **adaptive)
    add(engine, tid, "k1", "pgd", (20,), restorer="fixed", probes={"random_declared": False}, **adaptive)
    add(engine, tid, "k2", "pgd", (20,), restorer="drawn", probes={"random_declared": True},
        **dict(adaptive, eot_used=4))
    flags = compute_flags(engine, tid)
    assert [(f["restorer"], f["flag"]) for f in flags] == [("random", "no-eot")]


def test_a_tournament_shows_only_its_own_flags(tmp_path):
    engine = open_writer(tmp_path / "a.db")
    a, b = tournament(engine, "A"), tournament(engine, "B")
    add(engine, a, "a0", "pgd", (20, 20), start_grad={"finite": True, "abs_mean": 0.0})  # masked
    add(engine, a, "a1", "fgsm", (22, 22))
    add(engine, b, "b0", "pgd", (20, 20), start_grad={"finite": True, "abs_mean": 1e-3})
    add(engine, b, "b1", "fgsm", (22, 22))
    for tid in (a, b):  # what the driver does after each run
        refresh_flags(engine, tid)
    # `arena verify` re-ran A's pgd match: its finding belongs to A only
    store_flags(engine, [{"key": "a0", "threat": "oblivious", "norm": "linf", "eps": 0.03, "restorer": "r",
                          "defense": "none", "attack": "pgd", "flag": "not-converged", "reason": "moved"}],
                rerun=True)
    reader = open_reader(tmp_path / "a.db")
    (row_a,) = views.leaderboard(reader, a)
    (row_b,) = views.leaderboard(reader, b)
    assert "bad-gradient (pgd)" in row_a["flags"] and "not-converged (pgd): moved" in row_a["flags"]
    assert row_a["status"] == "unverified"
    assert row_b["flags"] == "" and row_b["status"] == "ranked"
    assert flags_by_system(reader, b) == {}
    (of_a,) = flags_by_system(reader, a).values()
    assert sorted(f.split(":")[0] for f in of_a) == ["bad-gradient", "not-converged"]


class Unhardenable(Defense):
    """Its hardening raises (a faulty hardening plugin)."""

    name = "unhardenable"
    hardens = True

    def harden(self, restorer, model, data, generator):
        raise RuntimeError("no weights today")


class SlowHarden(Defense):
    """Its hardening outlasts any timeout (a hanging hardening plugin)."""

    name = "slowharden"
    hardens = True

    def harden(self, restorer, model, data, generator):
        time.sleep(60)
        return model.state_dict()


def test_a_hardening_that_raises_or_hangs_fails_only_its_own_matches(tmp_path):
    registry = registry_with(Unhardenable, SlowHarden, role="defense")
    t = config(restorers=["tiny"], defenses=["none", "unhardenable", "slowharden"], attacks=["fgsm"],
               timeout_s=2)
    db = str(tmp_path / "h.db")
    # timeout_s bounds the whole job; synthesising the training split takes seconds once, then
    # it is cached: warm it, so that the 2 s are the plugins'
    load_data(t.data.name, "train", size=t.data.size, seed=t.data.seed)
    t0 = time.monotonic()
    report = run_tournament(t, db, executor="local", progress=False, registry=registry)
    assert time.monotonic() - t0 < 50  # the sleeping harden was cut at timeout_s
    assert report.counts == {"done": 1, "failed": 2}
    rows = {r["defense"]: r for r in queries.matches(open_reader(db))}
    assert rows["none"]["status"] == "done"
    raised, hung = rows["unhardenable"], rows["slowharden"]
    assert (raised["status"], raised["blame"]) == ("failed", "system")
    assert raised["reason"] == "hardening by 'unhardenable' failed: RuntimeError: no weights today"
    assert "Traceback" in raised["error"] and "no weights today" in raised["error"]
    assert (hung["status"], hung["blame"]) == ("failed", "system")
    assert hung["reason"] == "hardening by 'slowharden' timed out after 2 s"


def test_unknown_dataset_is_one_line_before_any_database(tmp_path):
    with pytest.raises(ConfigError, match=r"'data.name'.*must be one of embedded, embedded-full, discnet, poled, toled"):
        config(data={"name": "nope", "images": 2, "size": 16})
    cfg = tmp_path / "t.toml"
    cfg.write_text('[data]\nname = "nope"\n[[restorers]]\nname = "tiny"\n[[attacks]]\nname = "fgsm"\n')
    res = CliRunner().invoke(main, ["run", str(cfg), "--executor", "local", "--db", str(tmp_path / "x.db")])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1 and len(lines) == 1 and "data.name" in lines[0], res.output
    assert not (tmp_path / "x.db").exists()


def test_a_chain_with_two_hardening_links_is_refused_at_plan():
    registry = registry_with(Unhardenable, SlowHarden, role="defense")
    with pytest.raises(ConfigError, match=r"'unhardenable>slowharden' has more than one hardening link"):
        plan(config(restorers=["tiny"], defenses=["unhardenable>slowharden"]), registry)


def test_an_unknown_transfer_surrogate_is_refused_at_plan():
    t = config(restorers=["tiny"], attacks=[{"name": "transfer", "surrogate": "nope"}])
    with pytest.raises(ConfigError, match=r"attack 'transfer': surrogate 'nope' is not a registered restorer "
                                          r"\(registered: .*tiny"):
        plan(t, load_registry())


def test_the_cli_prints_one_line_for_a_data_error(tmp_path):
    res = CliRunner().invoke(main, ["train", "tiny", "--data", "nope", "--steps", "1", "--quiet",
                                    "--out", str(tmp_path)])
    assert res.exit_code == 1, res.output
    assert res.output.strip().splitlines() == [
        "Error: unknown dataset 'nope'; choose from ['embedded', 'embedded-full', 'discnet', 'poled', 'toled']"]


def test_the_user_facing_errors_share_one_base():
    from arena.data import DataError
    from arena.plugins import PluginError
    from arena.run.executors import ExecutorError
    from arena.store.db import DatabaseError
    from arena.store.migrations import SchemaError
    from arena.weights import WeightsError

    for cls in (ConfigError, DataError, PluginError, ExecutorError, DatabaseError, SchemaError, WeightsError):
        assert issubclass(cls, ArenaError), cls
    assert issubclass(ConfigError, ValueError) and issubclass(DataError, ValueError)


def test_m003_keeps_flags_per_tournament_and_the_minimum_norm_trait(tmp_path):
    from sqlalchemy import inspect, text

    path = tmp_path / "old.db"
    engine = open_writer(path)
    with engine.begin() as conn:  # the flags table as written before m003, with a pooled row
        conn.execute(text("DROP TABLE flags"))
        conn.execute(text("CREATE TABLE flags (id INTEGER PRIMARY KEY, threat VARCHAR(20) NOT NULL, "
                          "norm VARCHAR(8), eps FLOAT, restorer VARCHAR(200) NOT NULL, defense VARCHAR(400) "
                          "NOT NULL, attack VARCHAR(200), flag VARCHAR(60) NOT NULL, reason TEXT NOT NULL, "
                          "UNIQUE (threat, norm, eps, restorer, defense, attack, flag))"))
        conn.execute(text("INSERT INTO flags (threat, norm, eps, restorer, defense, attack, flag, reason) "
                          "VALUES ('oblivious', 'linf', 0.03, 'r', 'none', 'pgd', 'bad-gradient', 'pooled')"))
        conn.execute(text("DELETE FROM schema_migrations WHERE name = 'm003_enforcement'"))
    engine.dispose()
    migrated = open_writer(path)
    assert "tournament_id" in {c["name"] for c in inspect(migrated).get_columns("flags")}
    assert "minimum_norm" in {c["name"] for c in inspect(migrated).get_columns("matches")}
    a, b = tournament(migrated, "A"), tournament(migrated, "B")
    for tid in (a, b):  # the same flag in two tournaments: one row each
        add(migrated, tid, f"{tid}-k", "pgd", (20,), start_grad={"finite": False, "abs_mean": 1.0})
        refresh_flags(migrated, tid)
    rows = queries.fetch(migrated, text("SELECT tournament_id, flag, reason FROM flags ORDER BY tournament_id"))
    assert [(r["tournament_id"], r["flag"]) for r in rows] == [(a, "bad-gradient"), (b, "bad-gradient")]


def test_an_unavailable_component_is_skipped_and_the_run_finishes(tmp_path):
    """The driver used to look up every component's version without allowing unavailable ones,
    and raised after the tournament row was written."""
    from types import ModuleType

    from arena.api import Attack
    from arena.hookspecs import hookimpl

    class Absent(Attack):
        """Needs a package this machine lacks (a fixture)."""

        name = "absent"

        def perturb(self, target, lq, hq, budget, generator):
            raise AssertionError("never runs")

    module = ModuleType("testplugin_absent")
    module.register_attacks = hookimpl(lambda register: register(Absent, unavailable="needs the 'nowhere' package"))
    registry = load_registry(modules=(module,))
    db = str(tmp_path / "u.db")
    t = config(restorers=["identity"], defenses=["none"], attacks=["fgsm", "absent"])
    report = run_tournament(t, db, executor="local", progress=False, registry=registry)
    assert report.counts == {"done": 1, "skipped": 1}
    rows = {r["attack"]: r for r in queries.matches(open_reader(db))}
    assert rows["absent"]["status"] == "skipped" and "nowhere" in rows["absent"]["reason"]
    assert rows["absent"]["versions"]["attack:absent"].startswith("local ")
    [board] = views.leaderboard(open_reader(db))
    assert board["status"] == "ranked" and board["skipped"] == 1
