import subprocess
import sys

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import OperationalError

from arena.store import queries, views, write
from arena.store.db import DatabaseError, open_reader, open_writer
from arena.store.migrations import KNOWN, SchemaError, applied


def test_blank_database_migrates_to_every_table(tmp_path):
    engine = open_writer(tmp_path / "a.db")
    names = set(inspect(engine).get_table_names())
    assert {"tournaments", "entrants", "matches", "scores", "samples", "tournament_matches",
            "flags", "schema_migrations"} <= names
    with engine.connect() as conn:
        assert applied(conn) == sorted(KNOWN)
    open_writer(tmp_path / "a.db")  # second open applies nothing and keeps the data
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from schema_migrations")).scalar() == len(KNOWN)


def test_sqlite_uses_wal(tmp_path):
    engine = open_writer(tmp_path / "a.db")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def _match(key, attack, status="done", restorer="r", defense="none", threat="oblivious"):
    return {"key": key, "restorer": restorer, "defense": defense, "attack": attack,
            "attack_kind": "white-box", "threat": threat, "norm": "linf", "eps": 0.03,
            "spec": {}, "status": status, "verified": True if status == "done" else None}


def _score(image, clean, adv):
    return {"image": image, "clean_psnr": clean, "clean_ssim": 0.9, "adv_psnr": adv, "adv_ssim": 0.5}


def test_robust_psnr_is_mean_of_per_image_worst_case(tmp_path):
    engine = open_writer(tmp_path / "a.db")
    tid = write.upsert_tournament(engine, config_hash="h", name="t", config={})
    # attack A is worst on image 1, attack B on image 2: the worst mean would be 22.5,
    # the mean of per-image worst is (20 + 21) / 2 = 20.5
    write.write_result(engine, tid, _match("k1", "A"), [_score("i1", 30, 20), _score("i2", 32, 25)])
    write.write_result(engine, tid, _match("k2", "B"), [_score("i1", 30, 24), _score("i2", 32, 21)])
    write.write_result(engine, tid, dict(_match("k3", "C", status="disqualified"), blame="attack"), [])
    (row,) = views.leaderboard(engine)
    assert row["robust_psnr"] == pytest.approx(20.5)
    assert row["clean_psnr"] == pytest.approx(31.0)
    assert row["drop_psnr"] == pytest.approx(10.5)
    assert row["n_images"] == 2 and row["n_attacks"] == 2 and row["rank"] == 1
    assert row["worst_attack"] in {"A", "B"}


def test_write_is_idempotent_and_replaces_only_failures(tmp_path):
    engine = open_writer(tmp_path / "a.db")
    tid = write.upsert_tournament(engine, config_hash="h", name="t", config={})
    write.write_result(engine, tid, _match("k1", "A"), [_score("i1", 30, 20)])
    write.write_result(engine, tid, _match("k1", "A"), [_score("i1", 30, 10)])
    assert views.leaderboard(engine)[0]["robust_psnr"] == pytest.approx(20)
    write.write_result(engine, tid, _match("k2", "B", status="failed"), [])
    write.write_result(engine, tid, _match("k2", "B"), [_score("i1", 30, 15)])
    assert queries.status_counts(engine) == {"done": 2}
    assert views.leaderboard(engine)[0]["robust_psnr"] == pytest.approx(15)


def test_reader_is_read_only_and_refuses_missing_or_foreign(tmp_path):
    with pytest.raises(DatabaseError, match="does not exist"):
        open_reader(tmp_path / "missing.db")
    foreign = tmp_path / "foreign.db"
    import sqlite3
    sqlite3.connect(foreign).execute("create table x (y int)").connection.commit()
    with pytest.raises(SchemaError, match="not a udc-arena database"):
        open_reader(foreign)
    open_writer(tmp_path / "a.db")
    reader = open_reader(tmp_path / "a.db")
    with pytest.raises(OperationalError, match="readonly"):
        with reader.begin() as conn:
            conn.execute(text("insert into flags (threat, restorer, defense, flag, reason) values ('a','b','c','d','e')"))


def test_locked_database_fails_before_compute(tmp_path):
    import sqlite3

    from arena.store import db

    path = tmp_path / "locked.db"
    open_writer(path).dispose()
    holder = sqlite3.connect(path, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        db.BUSY_TIMEOUT_MS = 200
        with pytest.raises(DatabaseError, match="cannot open database.*locked"):
            open_writer(path)
    finally:
        db.BUSY_TIMEOUT_MS = 5000
        holder.rollback()
        holder.close()


def test_queries_import_neither_torch_nor_ray():
    code = ("import sys, arena.store.queries, arena.store.db; "
            "bad = [m for m in ('torch', 'ray') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_arena_leaderboard_imports_neither_torch_nor_ray(tmp_path):
    """The command reads the store only: a terminal or a CI step gets its table in a blink."""
    engine = open_writer(tmp_path / "a.db")
    tid = write.upsert_tournament(engine, config_hash="h", name="t", config={})
    write.write_result(engine, tid, _match("k1", "A"), [_score("i1", 30, 20)])
    code = ("import sys, runpy; sys.argv = ['arena', 'leaderboard', '--db', sys.argv[1]]\n"
            "try:\n    runpy.run_module('arena.cli', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "bad = [m for m in ('torch', 'ray') if m in sys.modules]\n"
            "assert not bad, f'arena leaderboard imported {bad}'")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.db")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1/1 done" in proc.stdout and "20.00" in proc.stdout  # it did read and print the row


def test_old_database_is_migrated_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.db"
    engine = open_writer(path)
    tid = write.upsert_tournament(engine, config_hash="h", name="t", config={})
    write.write_result(engine, tid, _match("k1", "A"), [_score("i1", 30, 20)])
    with engine.begin() as conn:  # make it look like a database written before m002 (and m012)
        for col in ("node", "started_at", "finished_at", "attack_ms_per_mp"):
            conn.execute(text(f"ALTER TABLE matches DROP COLUMN {col}"))
        conn.execute(text("DELETE FROM schema_migrations WHERE name IN ('m002_match_placement', 'm012_attack_cost')"))
    engine.dispose()
    with pytest.raises(SchemaError, match="differs"):
        open_reader(path)
    migrated = open_writer(path)
    cols = {c["name"] for c in inspect(migrated).get_columns("matches")}
    assert {"node", "started_at", "finished_at", "attack_ms_per_mp"} <= cols
    assert views.leaderboard(open_reader(path))[0]["robust_psnr"] == pytest.approx(20)


def test_seed_spread_is_mean_and_std_of_per_seed_robust_psnr(tmp_path):
    engine = open_writer(tmp_path / "a.db")
    tid = write.upsert_tournament(engine, config_hash="h", name="t", config={})
    # seed 0: worst per image 20, 22 -> 21; seed 1: 24, 26 -> 25; mean 23, sample std 2.83
    for i, (seed, attack, scores) in enumerate([(0, "A", (20, 23)), (0, "B", (21, 22)),
                                                (1, "A", (24, 26)), (1, "B", (25, 27))]):
        write.write_result(engine, tid, dict(_match(f"k{i}", attack), seed=seed),
                           [_score("i1", 30, scores[0]), _score("i2", 30, scores[1])])
    (row,) = views.leaderboard(engine)
    assert row["robust_psnr_seed_mean"] == pytest.approx(23.0)
    assert row["robust_psnr_seed_std"] == pytest.approx(2 ** 0.5 * 2)
    assert row["robust_psnr"] == pytest.approx(21.0)  # the headline stays the worst over every draw
    assert row["n_seeds"] == 2


def test_one_seed_has_no_spread(tmp_path):
    engine = open_writer(tmp_path / "a.db")
    tid = write.upsert_tournament(engine, config_hash="h", name="t", config={})
    write.write_result(engine, tid, _match("k1", "A"), [_score("i1", 30, 20)])
    (row,) = views.leaderboard(engine)
    assert row["robust_psnr_seed_std"] is None and row["robust_psnr_seed_mean"] == pytest.approx(20)
