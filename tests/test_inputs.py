"""Bad input is one line, up front: ε out of range, a --db that is not a database or cannot be
made, and a read-only database that can still be read (issue 16)."""

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from arena.cli import main
from arena.store import views, write
from arena.store.db import DatabaseError, open_reader, open_writer
from arena.threat import Budget

from helpers import TINY_TOML  # noqa: E402

CONFIG = 'name = "inputs"\n' + TINY_TOML


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_line(res) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1 and len(lines) == 1, res.output
    return lines[0]


@pytest.mark.parametrize("norm, eps, limit", [("linf", "300/255", "at most 1 for norm linf"),
                                              ("l2", "65", "less than or equal to 64")])
def test_eps_out_of_range_is_one_line_naming_field_value_and_limit(tmp_path, norm, eps, limit):
    cfg = tmp_path / "t.toml"
    cfg.write_text(CONFIG + f'[[budgets]]\nnorm = "{norm}"\neps = "{eps}"\n')
    line = one_line(run("run", str(cfg), "--dry-run"))
    assert "'budgets.0.eps'" in line and limit in line and eps in line


def test_eps_limits_per_norm():
    assert Budget(norm="linf", eps=1).eps == 1
    assert Budget(norm="l2", eps="300/255").eps == pytest.approx(300 / 255)  # a fine L2 radius
    with pytest.raises(ValueError, match="at most 1 for norm linf"):
        Budget(norm="linf", eps="256/255")


def test_a_text_file_as_db_is_one_line_and_left_untouched(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text(CONFIG)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n" * 10)
    before = notes.read_bytes()
    line = one_line(run("run", str(cfg), "--executor", "local", "--db", str(notes)))
    assert f"{notes} is not a udc-arena database" in line
    line = one_line(run("leaderboard", "--db", str(notes)))
    assert f"{notes} is not a udc-arena database" in line
    assert notes.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "t.toml"]  # no side files


def test_the_writer_leaves_a_foreign_sqlite_database_alone(tmp_path):
    import sqlite3

    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("create table invoices (n int)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match="not a udc-arena database: it has other tables \\(invoices\\)"):
        open_writer(path)
    assert path.read_bytes() == before


def test_an_uncreatable_folder_is_one_line(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text(CONFIG)
    (tmp_path / "file").write_text("")
    line = one_line(run("run", str(cfg), "--executor", "local", "--db", str(tmp_path / "file" / "sub" / "x.db")))
    assert "cannot create folder" in line and "file/sub" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root creates folders whatever the mode")
def test_a_folder_without_permission_is_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        with pytest.raises(DatabaseError, match="cannot create folder .*Permission denied"):
            open_writer(locked / "sub" / "x.db")
    finally:
        locked.chmod(0o755)


def _database_with_one_row(path):
    from test_store import _match, _score

    engine = open_writer(path)
    tid = write.upsert_tournament(engine, config_hash="h", name="t", config={})
    write.write_result(engine, tid, _match("k1", "A"), [_score("i1", 30, 20)])
    engine.dispose()  # the last connection checkpoints the log and removes -wal and -shm


def test_a_read_only_copy_in_a_read_only_folder_can_be_read(tmp_path):
    _database_with_one_row(tmp_path / "a.db")
    folder = tmp_path / "ro"
    folder.mkdir()
    shutil.copy(tmp_path / "a.db", folder / "a.db")
    (folder / "a.db").chmod(0o444)
    folder.chmod(0o555)
    before = (folder / "a.db").read_bytes()
    try:
        res = run("leaderboard", "--db", str(folder / "a.db"), "--format", "json")
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)[0]["robust_psnr"] == pytest.approx(20)
        assert views.leaderboard(open_reader(folder / "a.db"))[0]["robust_psnr"] == pytest.approx(20)
        # as root the mode does not stop SQLite: the side files it would have needed show it
        assert sorted(p.name for p in folder.iterdir()) == ["a.db"]
        assert (folder / "a.db").read_bytes() == before
    finally:
        folder.chmod(0o755)


def test_a_reader_beside_a_running_writer_sees_new_rows(tmp_path):
    """Only a read-only folder gets ``immutable``: the dashboard follows a running tournament."""
    from test_store import _match, _score

    path = tmp_path / "a.db"
    _database_with_one_row(path)
    reader = open_reader(path)
    assert len(views.leaderboard(reader)) == 1
    engine = open_writer(path)
    tid = write.upsert_tournament(engine, config_hash="h", name="t", config={})
    write.write_result(engine, tid, _match("k2", "A", restorer="s"), [_score("i1", 30, 25)])
    assert len(views.leaderboard(reader)) == 2
