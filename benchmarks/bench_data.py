"""Time generating the default embedded benchmark (train + test, size 64) from a cold cache.

Target: under 60 s on two CPU cores. Prints seconds and the ratio to the target (< 1 is good),
then the warm (cached) load time for comparison.

    python benchmarks/bench_data.py [--size 64] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import arena.data as D  # noqa: E402
import arena.data.embedded as E  # noqa: E402
import arena.data.psf as P  # noqa: E402

TARGET_S = 60.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    # Cold means no disk cache and no in-process memo of PSFs or prepared photographs.
    P._make_psf_cached.cache_clear()
    E._prepared_photo.cache_clear()
    with tempfile.TemporaryDirectory(prefix="arena-bench-") as cache:
        t0 = time.perf_counter()
        counts = {}
        for split in ("train", "test"):
            t = time.perf_counter()
            d = D.load_data("embedded", split, size=args.size, seed=args.seed, cache_dir=cache)
            counts[split] = (len(d), time.perf_counter() - t)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        for split in ("train", "test"):
            D.load_data("embedded", split, size=args.size, seed=args.seed, cache_dir=cache)
        warm = time.perf_counter() - t0

    for split, (n, s) in counts.items():
        print(f"{split:5s}: {n:4d} crops of {args.size}px in {s:6.2f} s")
    print(f"cold generation (train+test): {cold:.2f} s; target {TARGET_S:.0f} s; "
          f"ratio {cold / TARGET_S:.3f}")
    print(f"warm load from cache:         {warm:.2f} s; speed-up {cold / max(warm, 1e-9):.0f}x")


if __name__ == "__main__":
    main()
