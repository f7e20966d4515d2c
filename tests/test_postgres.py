"""The same tournament on a real PostgreSQL server gives the same leaderboard as on SQLite."""

import pytest

from arena.run.driver import run_tournament
from arena.store import views
from arena.store.db import DatabaseError, open_reader, open_writer
from helpers import config, require_tool, scores_only
from pg import free_port, postgres_server

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server() as url:
        yield require_tool(url, "PostgreSQL")


def test_postgres_and_sqlite_agree(pg_url, tmp_path, arena_registry):
    t = config(threat_models=["oblivious", "adaptive"])
    sqlite_db = str(tmp_path / "a.db")
    run_tournament(t, sqlite_db, executor="local", progress=False, registry=arena_registry)
    run_tournament(t, pg_url, executor="local", progress=False, registry=arena_registry)
    pg_rows = scores_only(views.leaderboard(open_reader(pg_url)), 6)
    assert pg_rows and pg_rows == scores_only(views.leaderboard(open_reader(sqlite_db)), 6)
    again = run_tournament(t, pg_url, executor="local", progress=False, registry=arena_registry)
    assert again.counts == {} and again.resumed == 16


def test_reader_on_postgres_refuses_writes(pg_url):
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    open_writer(pg_url)
    with pytest.raises(DBAPIError, match="read-only"):
        with open_reader(pg_url).begin() as conn:
            conn.execute(text("insert into flags (threat, restorer, defense, flag, reason) values ('a','b','c','d','e')"))


def test_unreachable_server_is_a_clear_error():
    with pytest.raises(DatabaseError, match="cannot open database"):
        open_writer(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing")
