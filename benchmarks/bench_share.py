"""Each adversarial example once: a tournament's wall time with and without shared attack
computations (arena/run/share.py), side by side in one run, and whether the leaderboards agree.

    .venv/bin/python benchmarks/bench_share.py [--config configs/default.toml] [--images 8]
        [--restorers unet nafnet] [--executor local|ray]

Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from arena.plan import plan, read_config
from arena.plugins import load_registry
from arena.run.driver import run_tournament
from arena.run.share import computations
from arena.store import views
from arena.store.db import open_reader


def configured(config: str, images: int | None, restorers: list[str] | None):
    t = read_config(config)
    if images:
        t = t.model_copy(update={"data": t.data.model_copy(update={"images": images})})
    if restorers:
        t = t.model_copy(update={"restorers": restorers})
    return t


def one(config: str, images, restorers, executor: str, share: bool, folder: str):
    """One tournament run, with or without sharing: (wall seconds, leaderboard)."""
    t = configured(config, images, restorers)
    db = str(Path(folder) / f"share-{share}.db")
    os.environ["ARENA_CACHE"] = str(Path(folder) / f"cache-{share}")  # both build their hardened weights
    t0 = time.perf_counter()
    run_tournament(t, db, executor=executor, progress=False, registry=load_registry(), share=share)
    return time.perf_counter() - t0, views.leaderboard(open_reader(db))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/default.toml")
    p.add_argument("--images", type=int, default=None, help="override data.images")
    p.add_argument("--restorers", nargs="+", default=None, help="override the restorers")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    args = p.parse_args()
    t = configured(args.config, args.images, args.restorers)
    registry = load_registry()
    matches = plan(t, registry)
    print(f"{len(matches)} matches, {computations(matches, registry)} attack computations")
    boards, walls = {}, {}
    with tempfile.TemporaryDirectory() as d:
        for share in (False, True):  # each in a fresh interpreter: neither inherits the other's warm-up
            out = Path(d) / f"share-{share}.json"
            code = ("import json, os, sys, time; sys.argv = sys.argv[:1]; from benchmarks.bench_share import one; "
                    f"json.dump(one({args.config!r}, {args.images!r}, {args.restorers!r}, {args.executor!r}, "
                    f"{share!r}, {d!r}), open({str(out)!r}, 'w'), default=str)")
            subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
            walls[share], boards[share] = json.loads(out.read_text())
    strip = lambda rows: json.dumps(views.scores_only(rows), sort_keys=True)  # noqa: E731
    print(f"wall time: every match attacks {walls[False]:.1f} s, shared {walls[True]:.1f} s "
          f"({walls[True] / walls[False]:.2f}x)")
    print("leaderboards identical (timings aside):", strip(boards[False]) == strip(boards[True]))


if __name__ == "__main__":
    main()
