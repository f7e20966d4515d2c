"""The udc-arena dashboard: `arena dashboard` runs it with ARENA_DB set.

A Streamlit multipage app (``st.navigation``). Each page is a file in ``sections/``, not
``pages/``: Streamlit would also pick up a ``pages/`` folder as an old-style multipage app and
run those files without this entry script (no database check, no sidebar). Every page reads
the database through ``common``, read-only.
"""

from __future__ import annotations

import sys
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
db = common.db_url()
waiting = sqlite_path(db)
if waiting is not None and not waiting.exists():  # started before the first result: wait for it
    st.navigation(pages, position="hidden")  # the address keeps its page (/runs) for when results come
    st.title("udc-arena")
    st.info(f"No results yet: the database {str(waiting)!r} does not exist. This page opens the results "
            "as soon as a tournament writes them (`arena run configs/default.toml --db FILE`).")

    @st.fragment(run_every=2)
    def wait_for_results():
        if waiting.exists():
            st.rerun()

    wait_for_results()
    st.stop()
try:
    common.engine(db)
except (DatabaseError, SchemaError, SQLAlchemyError) as exc:
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
