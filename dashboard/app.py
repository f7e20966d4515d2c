"""The udc-arena dashboard: `arena dashboard` runs it with ARENA_DB set.

A Streamlit multipage app (``st.navigation``). Each page is a file in ``sections/``, not
``pages/``: Streamlit would also pick up a ``pages/`` folder as an old-style multipage app and
run those files without this entry script (no database check, no sidebar). Every page reads
the database through ``common``, read-only.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import time
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
# `streamlit run` puts this folder on sys.path, the test harness does not; both need `common`.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import common  # noqa: E402

from arena.store.db import DatabaseError, sqlite_path  # noqa: E402
from arena.store.migrations import SchemaError  # noqa: E402
from sqlalchemy.exc import SQLAlchemyError  # noqa: E402

st.set_page_config(page_title="udc-arena", layout="wide")

pages = [
    st.Page(HERE / "sections" / "leaderboard.py", title="Leaderboard", icon=":material/leaderboard:", default=True),
    st.Page(HERE / "sections" / "attacks.py", title="Attacks", icon=":material/bolt:"),
    st.Page(HERE / "sections" / "matrix.py", title="Matrix", icon=":material/grid_on:"),
    st.Page(HERE / "sections" / "curves.py", title="Curves", icon=":material/show_chart:"),
    st.Page(HERE / "sections" / "gallery.py", title="Gallery", icon=":material/photo_library:"),
    st.Page(HERE / "sections" / "runs.py", title="Runs", icon=":material/history:"),
]


def wait(message: str) -> None:
    """Say ``message`` and look again every two seconds (the address keeps its page, /runs)."""
    st.navigation(pages, position="hidden")
    st.title("udc-arena")
    st.info(message)

    @st.fragment(run_every=2)
    def look_again():
        if ready():
            st.rerun()

    look_again()
    st.stop()


db = common.db_url()
waiting = sqlite_path(db)


def ready() -> bool:
    """The database can be opened (or is not an SQLite file we can watch for)."""
    if waiting is None:
        return True
    if not waiting.exists():
        return False
    try:
        common.engine(db)
        return True
    except (DatabaseError, SchemaError, SQLAlchemyError):
        return not just_created()


def just_created() -> bool:
    """A driver created the file moments ago and is still writing its schema: young, and no
    table visible yet (a foreign file has tables, and gets its error at once)."""
    try:
        if time.time() - waiting.stat().st_mtime >= CREATING_S:
            return False
        with contextlib.closing(sqlite3.connect(f"{waiting.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            return conn.execute("select count(*) from sqlite_master").fetchone()[0] == 0
    except sqlite3.OperationalError:  # locked by the writer's first transaction
        return True
    except (OSError, sqlite3.DatabaseError):
        return False


#: seconds a new SQLite file may take to get its schema before its errors are shown
CREATING_S = 30
if waiting is not None and not waiting.exists():  # started before the first result: wait for it
    wait(f"No results yet: the database {str(waiting)!r} does not exist. This page opens the results "
         "as soon as a tournament writes them (`arena run configs/default.toml --db FILE`).")
try:
    common.engine(db)
except (DatabaseError, SchemaError, SQLAlchemyError) as exc:
    if waiting is not None and just_created():
        wait(f"No results yet: the database {str(waiting)!r} is being created.")
    st.title("udc-arena")
    st.error(f"Cannot open the results database {db!r}: {exc}")
    st.info("Run a tournament first (`arena run configs/default.toml --db FILE`), then "
            "`arena dashboard --db FILE`.")
    st.stop()

tournaments = common.query("tournaments", db)
choices = [t["id"] for t in tournaments] + [common.ALL]
names = {t["id"]: f"#{t['id']} {t['name']} ({t['updated_at']:%Y-%m-%d %H:%M})" if t["updated_at"]
         else f"#{t['id']} {t['name']}" for t in tournaments}
with st.sidebar:
    st.selectbox("Tournament", choices, key="tournament",
                 format_func=lambda i: names.get(i, "all stored matches"),
                 help="Which matches count: those of one tournament (resumed ones included) or every stored match.")
    st.caption(f"database: `{db}` (read-only)")

st.navigation(pages).run()
