"""Dashboard speed on a large results database: leaderboard query and page render.

Builds a SQLite database of SYNTHETIC results (made-up PSNR/SSIM values, no model is run;
the tournament is named "synthetic-benchmark" and its config says so) with about 100,000
score rows, written through arena.store.write exactly as the driver writes real ones. Then
times, each against the 2 s target:

1. views.leaderboard (the dashboard's and the CLI's query) unfiltered and with its attack-kind
   filter, median of a few runs;
2. the leaderboard page through Streamlit's AppTest: the first run in a fresh process (imports
   and AppTest's component scan included: a server pays these once, at start-up), then with
   the query cache empty (what a user waits for after a new filter or a finished match), then
   cached; the other pages with the cache empty, for reference.

    python benchmarks/bench_dashboard.py [--rows 100000] [--db PATH] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from itertools import product
from pathlib import Path

from arena.store import views, write
from arena.store.db import open_reader, open_writer

TARGET_S = 2.0
ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
THREATS = ["oblivious", "adaptive"]
EPS = [2 / 255, 4 / 255, 8 / 255, 16 / 255]
RESTORERS = ["unet", "discnet", "tiny", "identity"]
DEFENSES = ["none", "jpeg", "median", "diffpure", "jpeg>finetune"]
ATTACKS = [("fgsm", "white-box", 1.0), ("pgd", "white-box", 1.6), ("apgd", "white-box", 1.8),
           ("square", "score-based", 0.9), ("noise", "decision-free", 0.2)]


def build(db: str, rows: int, seed: int = 0) -> int:
    """Write synthetic matches until about ``rows`` score rows exist; return the count."""
    rng = random.Random(seed)
    systems = list(product(THREATS, EPS, RESTORERS, DEFENSES, ATTACKS))
    images = max(1, round(rows / len(systems)))
    engine = open_writer(db)
    tid = write.upsert_tournament(
        engine, config_hash=f"synthetic-{seed}-{rows}", name="synthetic-benchmark",
        config={"synthetic": True, "note": "made-up scores for benchmarks/bench_dashboard.py"},
        command="python benchmarks/bench_dashboard.py", code_version="synthetic", seed=seed)
    clean = {(r, d, i): rng.gauss(28, 2) for r, d, i in product(RESTORERS, DEFENSES, range(images))}
    for n, (threat, eps, restorer, defense, (attack, kind, strength)) in enumerate(systems):
        key = f"synthetic{n:06d}"
        match = {"key": key, "restorer": restorer, "defense": defense, "attack": attack, "attack_kind": kind,
                 "threat": threat, "norm": "linf", "eps": eps, "steps": 10, "queries_limit": 1000, "eot": 1,
                 "seed": seed, "spec": {"synthetic": True}, "status": "done", "time_attack_s": rng.uniform(0.1, 5),
                 "defense_ms_per_mp": rng.uniform(1, 500), "gradient_calls": 10}
        scores = []
        for i in range(images):
            c = clean[(restorer, defense, i)]
            adv = c - strength * eps * 255 * rng.uniform(0.3, 0.7) * (1.3 if threat == "adaptive" else 1.0)
            scores.append({"image": f"img{i:04d}", "clean_psnr": c, "clean_ssim": 0.9, "adv_psnr": adv,
                           "adv_ssim": 0.9 - (c - adv) / 40, "linf": eps, "l2": eps * 10, "queries": 0})
        write.write_result(engine, tid, match, scores)
    return len(systems) * images


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timed_run(at) -> float:
    t0 = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"the page raised: {at.exception}")
    return elapsed


def report(name: str, seconds: float) -> None:
    print(f"{name:<44} {seconds:8.3f} s   {seconds / TARGET_S:6.2f} x the {TARGET_S:.0f} s target")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--db", default=None, help="database file (default: a temporary one)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    db = args.db or str(Path(tempfile.mkdtemp(prefix="bench-dashboard-")) / "arena.db")
    if Path(db).exists():
        raise SystemExit(f"{db} exists; give a new path (the benchmark writes synthetic rows)")
    t0 = time.perf_counter()
    n = build(db, args.rows)
    print(f"SYNTHETIC database {db}: {n} score rows, "
          f"{len(THREATS) * len(EPS) * len(RESTORERS) * len(DEFENSES) * len(ATTACKS)} matches "
          f"(written in {time.perf_counter() - t0:.1f} s)\n")

    engine = open_reader(db)
    report("views.leaderboard (dashboard and CLI query)", timed(lambda: views.leaderboard(engine), args.repeat))
    report("views.leaderboard, attack-kind filter", timed(
        lambda: views.leaderboard(engine, attack_kinds=["white-box"]), args.repeat))

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["ARENA_DB"] = db
    # one AppTest for everything: each new one rescans installed packages for components
    # (about 1 s here), which a real server does once at start-up
    at = AppTest.from_file(APP, default_timeout=300)
    report("leaderboard page, first run (imports, scan)", timed_run(at))
    st.cache_data.clear()
    report("leaderboard page, cold query cache", timed_run(at))
    report("leaderboard page, warm query cache", timed_run(at))
    for page in ("attacks", "matrix", "curves", "gallery", "runs"):
        at.switch_page(f"sections/{page}.py")
        st.cache_data.clear()
        report(f"{page} page, cold query cache", timed_run(at))


if __name__ == "__main__":
    main()
