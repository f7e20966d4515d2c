"""What every dashboard page shares: the read-only engine, cached queries, labels.

The pages never write: the engine comes from :func:`arena.store.db.open_reader`, which opens
SQLite in ``mode=ro`` (and PostgreSQL in read-only transactions).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import pandas as pd
import streamlit as st

from arena import display
from arena.store import queries, views
from arena.store.db import DEFAULT_DB, open_reader

# Cached results are keyed on the database's stamp (a new result is seen at once); the TTL only
# bounds what a write the stamp misses could leave stale.
TTL_S = 15
#: the sidebar's choice meaning "every stored match" (a string: None would read as "no choice")
ALL = "all"


def db_url() -> str:
    return os.environ.get("ARENA_DB", DEFAULT_DB)


@st.cache_resource(show_spinner=False)
def engine(db: str):
    return open_reader(db)


def view(name: str, db: str, *args: Any, **kwargs: Any):
    """``arena.store.views.<name>(engine, *args, **kwargs)``, cached until the database changes."""
    return _cached("views", name, db, live("stamp", db), *args, **kwargs)


def query(name: str, db: str, *args: Any, **kwargs: Any):
    """``arena.store.queries.<name>(engine, *args, **kwargs)``, cached until the database changes."""
    return _cached("queries", name, db, live("stamp", db), *args, **kwargs)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _cached(module: str, name: str, db: str, version: tuple, *args: Any, **kwargs: Any):
    # ``version`` (arena.store.live.stamp) only keys the cache: a new result is shown at once
    return getattr({"views": views, "queries": queries}[module], name)(engine(db), *args, **kwargs)


def tournament_id() -> int | None:
    """The tournament chosen in the sidebar (``None``: every stored match)."""
    choice = st.session_state.get("tournament")
    return None if choice == ALL else choice


def eps_label(norm: str, eps: float) -> str:
    """The norm and ε, as a fraction of 255 where it is one (linf ε=8/255)."""
    return f"{norm} ε={display.eps_label(eps)}"


def budget_label(b: dict[str, Any]) -> str:
    return f"{b['threat']} · {eps_label(b['norm'], b['eps'])}"


def same_budget(row: dict[str, Any], budget: dict[str, Any]) -> bool:
    return ((row["threat"], row["norm"]) == (budget["threat"], budget["norm"])
            and abs(row["eps"] - budget["eps"]) <= views.EPS_TOLERANCE)


def frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)


def number(label: str, fmt: str = "%.2f", help: str | None = None):
    return st.column_config.NumberColumn(label, format=fmt, help=help)


LEADERBOARD_COLUMNS = {
    "rank": st.column_config.NumberColumn("rank", format="%d"),
    "status": st.column_config.TextColumn(
        "status", help="ranked: every match done and verified; unverified: masked gradients not yet "
        "checked by a gradient-free attack; unranked: a match failed (not by the attack's fault) or is pending"),
    "restorer": st.column_config.TextColumn("restorer"),
    "defense": st.column_config.TextColumn("defense"),
    "clean_psnr": number("clean PSNR", help="Defended system on clean input, dB"),
    "clean_ssim": number("clean SSIM", "%.4f"),
    "robust_psnr": number("robust PSNR",
                          help="Mean over images of the per-image worst case over the counted attacks, dB"),
    "robust_ssim": number("robust SSIM", "%.4f"),
    "drop_psnr": number("drop", help="clean PSNR - robust PSNR, dB"),
    "worst_attack": st.column_config.TextColumn("worst attack"),
    "defense_s_per_mp": number("defense s/MP", "%,.4f", help="Defense time per megapixel, seconds"),
    "n_images": st.column_config.NumberColumn("images", format="%d"),
    "n_attacks": st.column_config.NumberColumn("attacks", format="%d"),
    "n_seeds": st.column_config.NumberColumn("seeds", format="%d"),
    "robust_psnr_seed_mean": number("robust PSNR, seed mean",
                                    help="Robust PSNR computed per seed, averaged over seeds, dB"),
    "robust_psnr_seed_std": number("± std over seeds", help="Sample std of the per-seed robust PSNR "
                                   "(empty with one seed: a single draw)"),
    "flags": st.column_config.TextColumn("sanity flags", width="large"),
    "why": st.column_config.TextColumn("why not ranked / notes", width="large"),
}

#: one line per threat model, shown wherever both are
THREAT_MODELS = {
    "oblivious": "the attacker differentiates the undefended restorer; the defense is applied only at "
                 "evaluation (the paper's setting)",
    "adaptive": "the attacker gets the whole defended system: exact gradients, BPDA where a link declares "
                "it, EOT over random links (what the robustness literature requires)",
}
#: short badges for the sanity flags of arena/flags.py (unknown flags get their initials)
BADGES = {
    "bad-gradient": "⚠grad", "no-eot": "⚠EOT", "weaker-than-fgsm": "⚠<FGSM",
    "gradient-attacks-beaten": "⚠beaten", "damage-not-growing": "⚠ε-flat", "adaptive-weaker": "⚠adapt",
    "not-converged": "⚠conv", "test-only": "⚠test",
}


def badge(flag: str) -> str:
    return BADGES.get(flag) or "⚠" + "".join(w[0] for w in flag.split("-"))


def table_height(n_rows: int) -> int:
    """A data grid tall enough for every row (header + rows + border): no inner scrolling."""
    return 35 * (n_rows + 1) + 3


#: live progress goes stale fast: it is read again every two seconds at most
LIVE_TTL_S = 2
#: seconds between refreshes of a page while a tournament is active (arena.store.live)
ACTIVE_REFRESH_S = 3
#: seconds between looks, while nothing runs, for a tournament that starts (they rerun nothing)
IDLE_CHECK_S = 30


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def live(name: str, db: str, *args: Any, **kwargs: Any):
    """``arena.store.live.<name>(engine, *args, **kwargs)``, cached for two seconds."""
    from arena.store import live as live_queries

    return getattr(live_queries, name)(engine(db), *args, **kwargs)


def auto_refresh(db: str, tid: int | None, body: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Keep the page current while a tournament runs; return its progress (arena.store.live).

    A fragment looks at the database every ACTIVE_REFRESH_S seconds while a tournament is active
    and reruns the whole page (no browser reload) when anything it shows was written; when the
    tournament ends the page is rerun once more and the looks slow to one every IDLE_CHECK_S,
    which rerun the page only if a tournament has started. ``body(progress)`` draws inside the
    fragment, so it is redrawn at every look (counts, ETA); the default is :func:`running_banner`.
    """
    first, seen = live("progress", db, tid), live("stamp", db)

    @st.fragment(run_every=ACTIVE_REFRESH_S if first["active"] else IDLE_CHECK_S)
    def watch():
        p = live("progress", db, tid)
        if p["active"] != first["active"] or live("stamp", db) != seen:
            st.rerun()  # scope app: every table of the page, not only this fragment
        (body or running_banner)(p)

    watch()
    return first


def running_banner(p: dict[str, Any]) -> None:
    """One line while a tournament is active: how far it has got, and that the page follows it."""
    if not p["active"]:
        return
    done = p["stored"]
    total = f" of {p['planned']}" if p["planned"] is not None else ""
    if p["running"]:
        what = f"A tournament is running: {done}{total} matches stored, {p['running']} in flight"
    elif p["planned"] is not None and done >= p["planned"]:  # the driver's fresh re-scoring
        what = f"A tournament is finishing: {p['unverified']} of its {done} matches wait for their fresh re-score"
    else:  # Ray starting, hardened weights being built
        what = f"A tournament is starting: {done}{total} matches stored, none in flight yet"
    st.warning(f"{what}. Numbers will change: this page refreshes itself every {ACTIVE_REFRESH_S} s "
               "until it ends. Systems with matches still to run are marked incomplete and not ranked.")
