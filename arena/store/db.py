"""Engines: a writing engine for the driver (migrates on open) and a read-only one."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DatabaseError as SQLDatabaseError
from sqlalchemy.exc import SQLAlchemyError

from arena.errors import ArenaError
from arena.store.migrations import check_current, migrate

DEFAULT_DB = "arena-results/arena.db"
BUSY_TIMEOUT_MS = 5000
SQLITE_HEADER = b"SQLite format 3\x00"


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


def _refuse_foreign_file(path: Path) -> None:
    """Refuse, before SQLite touches it (WAL mode rewrites the header), a file that is not an
    SQLite database, or one that holds other tables and no udc-arena schema. Empty: a new one."""
    if not path.exists():
        return
    if not path.is_file():
        raise DatabaseError(f"{path} is not a udc-arena database: not a file")
    with path.open("rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if not head:
        return
    if head != SQLITE_HEADER:
        raise DatabaseError(f"{path} is not a udc-arena database: not an SQLite file")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            conn.close()
    except sqlite3.Error:
        return  # locked, or unreadable: the writer's own open says which, in one line
    if tables and "schema_migrations" not in tables:
        raise DatabaseError(f"{path} is not a udc-arena database: it has other tables "
                            f"({', '.join(sorted(tables)[:5])}) and no schema_migrations")


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(f"cannot create folder {path.parent} for database {path}: "
                            f"{exc.strerror or exc}") from None


def open_writer(db: str | Path) -> Engine:
    """Open (creating and migrating if needed) the results database for the driver.

    Fails at once, before any compute, if the database is locked, unreachable or foreign.
    """
    url = normalise_url(db)
    parsed = make_url(url)
    if (path := sqlite_path(url)) is not None:
        _refuse_foreign_file(path)
        _make_parent(path)
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
    except SQLDatabaseError as exc:
        raise _open_error(url, exc) from None
    return engine


def _open_error(url: str, exc: SQLDatabaseError) -> DatabaseError:
    if "file is not a database" in str(exc.orig):
        return DatabaseError(f"{sqlite_path(url) or url} is not a udc-arena database: {exc.orig}")
    return DatabaseError(f"cannot open database {url!r}: {exc.orig}")


def _read_only_folder(path: Path) -> bool:
    """No one may write the folder: then no writer can be running, and SQLite's side files
    (-wal, -shm) could not be made. The mode bits count too, so that root honours a chmod."""
    folder = path.resolve().parent
    return not os.access(folder, os.W_OK) or not folder.stat().st_mode & 0o222


def _sqlite_reader_uri(path: Path) -> str:
    """``mode=ro``, plus ``immutable=1`` (no locks, no side files) in a read-only folder unless
    a write-ahead log lies beside the file: its pages are part of the database."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    wal = path.with_name(path.name + "-wal")
    if _read_only_folder(path) and not (wal.is_file() and wal.stat().st_size):
        uri += "&immutable=1"
    return uri


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
        uri = _sqlite_reader_uri(path)
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
    except SQLDatabaseError as exc:
        raise _open_error(url, exc) from None
    return engine
