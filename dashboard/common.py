"""What every dashboard page shares: the read-only engine, cached queries, labels.

The pages never write: the engine comes from :func:`arena.store.db.open_reader`, which opens
SQLite in ``mode=ro`` (and PostgreSQL in read-only transactions).
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import streamlit as st

from arena import display
from arena.store import queries, views
from arena.store.db import DEFAULT_DB, open_reader

# A tournament still running keeps writing: cached results go stale after this many seconds.
TTL_S = 15
#: the sidebar's choice meaning "every stored match" (a string: None would read as "no choice")
ALL = "all"


def db_url() -> str:
    return os.environ.get("ARENA_DB", DEFAULT_DB)


@st.cache_resource(show_spinner=False)
def engine(db: str):
    return open_reader(db)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def view(name: str, db: str, *args: Any, **kwargs: Any):
    """``arena.store.views.<name>(engine, *args, **kwargs)``, cached per arguments."""
    return getattr(views, name)(engine(db), *args, **kwargs)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def query(name: str, db: str, *args: Any, **kwargs: Any):
    """``arena.store.queries.<name>(engine, *args, **kwargs)``, cached per arguments."""
    return getattr(queries, name)(engine(db), *args, **kwargs)


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


#: live progress goes stale fast: the Runs page refreshes it every few seconds
LIVE_TTL_S = 2


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def live(name: str, db: str, *args: Any, **kwargs: Any):
    """``arena.store.live.<name>(engine, *args, **kwargs)``, cached for two seconds."""
    from arena.store import live as live_queries

    return getattr(live_queries, name)(engine(db), *args, **kwargs)
