"""Engines: a writing engine for the driver (migrates on open) and a read-only one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from arena.errors import ArenaError
from arena.store.migrations import check_current, migrate

DEFAULT_DB = "arena-results/arena.db"
BUSY_TIMEOUT_MS = 5000


class DatabaseError(ArenaError, RuntimeError):
    """The database cannot be opened as asked."""


def normalise_url(db: str | Path) -> str:
    """A SQLAlchemy URL from a URL or a plain file path (SQLite)."""
    db = str(db)
    return db if "://" in db else f"sqlite:///{Path(db).expanduser()}"


def sqlite_path(db: str | Path) -> Path | None:
    """The file of a SQLite database given as a URL or a plain path; None for any other
    database, or SQLite in memory."""
    parsed = make_url(normalise_url(db))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _sqlite_pragmas(engine: Engine, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - trivial
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if wal:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.close()


def open_writer(db: str | Path) -> Engine:
    """Open (creating and migrating if needed) the results database for the driver.

    Fails at once, before any compute, if the database is locked, unreachable or foreign.
    """
    url = normalise_url(db)
    parsed = make_url(url)
    if (path := sqlite_path(url)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = create_engine(url, future=True)
    except (SQLAlchemyError, ImportError) as exc:
        raise DatabaseError(f"cannot use database {url!r}: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        _sqlite_pragmas(engine, wal=True)
    try:
        with engine.begin() as conn:
            migrate(conn)
        if parsed.get_backend_name() == "sqlite":
            _probe_write_lock(engine)
    except OperationalError as exc:
        raise DatabaseError(f"cannot open database {url!r}: {exc.orig}") from None
    return engine


def _probe_write_lock(engine: Engine) -> None:
    """Take and release SQLite's write lock, so a database locked by another process fails
    now (after the busy timeout) rather than after the first match has been computed."""
    raw = engine.raw_connection()
    try:
        try:
            raw.driver_connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise DatabaseError(f"cannot open database {engine.url}: {exc}") from None
        raw.driver_connection.rollback()
    finally:
        raw.close()


def open_reader(db: str | Path) -> Engine:
    """A read-only engine; refuses a missing database or one of an unknown schema."""
    url = normalise_url(db)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is None or not path.is_file():
            raise DatabaseError(f"database file {path or parsed.database} does not exist (run `arena run` first)")
        uri = f"file:{path.resolve()}?mode=ro"
        engine = create_engine(
            "sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)
        )
    else:
        connect_args = {}
        if parsed.get_backend_name() == "postgresql":
            # every pooled connection, not just the first, refuses writes
            connect_args = {"options": "-c default_transaction_read_only=on"}
        engine = create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            check_current(conn)
    except OperationalError as exc:
        raise DatabaseError(f"cannot open database {url!r}: {exc.orig}") from None
    return engine
