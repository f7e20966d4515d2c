"""Executor costs, side by side: Ray scheduling overhead vs a match's own compute, one worker
vs two, and what warm workers and the clean-restoration cache save.

    .venv/bin/python benchmarks/bench_executor.py [--restorer unet] [--size 64] [--images 8]

Prints ratios; asserts nothing (this machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from arena.data import load_data
from arena.plan import parse_config, plan
from arena.plugins import load_registry
from arena.run.driver import run_tournament
from arena.run.worker import Worker
from arena.store import queries
from arena.store.db import open_reader


def tournament(args, workers: int, attacks: list[str]):
    return parse_config({
        "name": f"bench-{workers}", "seed": 0, "workers": workers, "num_cpus": 1,
        "data": {"name": "embedded", "images": args.images, "size": args.size},
        "restorers": [args.restorer], "defenses": ["none", {"name": "jpeg", "quality": 60}],
        "attacks": attacks,
        "budgets": [{"eps": f"{e}/255", "steps": args.steps} for e in (1, 2, 4, 8)],
        "samples_per_match": 0,
    })


def timed_run(t, executor: str) -> tuple[float, list[dict]]:
    with tempfile.TemporaryDirectory() as d:
        db = str(Path(d) / "b.db")
        t0 = time.perf_counter()
        run_tournament(t, db, executor=executor, progress=False)
        wall = time.perf_counter() - t0
        return wall, queries.matches(open_reader(db))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--restorer", default="unet")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    import ray

    load_data("embedded", "test", images=args.images, size=args.size)  # warm the data cache
    attacks = ["fgsm", "pgd", "bim"]

    print(f"restorer={args.restorer} size={args.size} images={args.images} pgd steps={args.steps}")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        timed_run(tournament(args, 1, ["fgsm"]), "ray")  # start-up, imports, page cache
        wall1, rows1 = timed_run(tournament(args, 1, attacks), "ray")
        wall2, rows2 = timed_run(tournament(args, 2, attacks), "ray")
    finally:
        ray.shutdown()
    compute = sum(r["finished_at"] - r["started_at"] for r in rows1)
    n = len(rows1)
    # steady state: the worker's idle gaps between matches (dispatch, transfer, driver writes)
    span = max(r["finished_at"] for r in rows1) - min(r["started_at"] for r in rows1)
    gap = (span - compute) / max(n - 1, 1)
    startup = wall1 - span
    print(f"\n1 worker on Ray: {n} matches in {wall1:.2f} s (of which {startup:.2f} s Ray/actor start-up, once "
          f"per tournament); match compute {compute / n * 1000:.0f} ms/match; scheduling overhead between "
          f"matches {gap * 1000:.1f} ms = {100 * gap / (compute / n):.1f}% of compute (target < 5%)")
    span2 = max(r["finished_at"] for r in rows2) - min(r["started_at"] for r in rows2)
    print(f"1 worker vs 2 workers, first match start to last match end: {span:.2f} s vs {span2:.2f} s, "
          f"speed-up x{span / span2:.2f} (target >= 1.7); wall clock with start-up: "
          f"{wall1:.2f} s vs {wall2:.2f} s, x{wall1 / wall2:.2f}")

    # warm workers and the clean cache, measured in process so nothing else varies
    torch.set_num_threads(1)
    t = tournament(args, 1, attacks)
    registry = load_registry()
    matches = [m for m in plan(t, registry) if m.status == "planned"]
    data = load_data("embedded", "test", images=args.images, size=args.size)

    def run_all(reuse_worker: bool, keep_clean: bool) -> float:
        worker = Worker(data, registry=registry)
        t0 = time.perf_counter()
        for m in matches:
            if not reuse_worker:
                worker = Worker(data, registry=registry)
            if not keep_clean:
                worker._clean.clear()
            worker.run(m)
        return time.perf_counter() - t0

    warm = statistics.median(run_all(True, True) for _ in range(2))
    no_clean = statistics.median(run_all(True, False) for _ in range(2))
    cold = statistics.median(run_all(False, False) for _ in range(2))
    print(f"\nin process, {len(matches)} matches: warm worker + clean cache {warm:.2f} s | "
          f"warm worker, no clean cache {no_clean:.2f} s (x{no_clean / warm:.2f}) | "
          f"cold worker per match {cold:.2f} s (x{cold / warm:.2f})")


if __name__ == "__main__":
    main()
