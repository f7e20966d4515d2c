"""Time fresh UDC pairs on the CPU, one thread: the numpy per-image loop that issue 20 replaced
(arena/data/augment.py at commit c680501) against the batched torch renderer (Resynthesis, and
ScenePool which cuts from the photographs), per batch of fresh pairs.

    .venv/bin/python scripts/bench_resynthesis.py [sizes ...]      # default 16 32 64
"""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path

import torch

from arena.data import load_data
from arena.data.augment import Resynthesis, ScenePool

OLD_COMMIT = "c680501"
ROOT = Path(__file__).resolve().parent.parent


def old_module() -> types.ModuleType:
    src = subprocess.run(["git", "show", f"{OLD_COMMIT}:arena/data/augment.py"], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    mod = types.ModuleType("old_augment")
    exec(compile(src, "old_augment.py", "exec"), mod.__dict__)
    return mod


def per_batch(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main(sizes: list[int], n: int = 4, repeats: int = 20) -> None:
    torch.set_num_threads(1)
    old = old_module()
    print(f"{n} fresh pairs per batch, {repeats} batches, 1 thread; ms per batch")
    print("| size | numpy loop (old) | torch Resynthesis | torch ScenePool | old / Resynthesis |")
    print("|---|---|---|---|---|")
    for size in sizes:
        train = load_data("embedded", "train", size=size, seed=0)
        idx = torch.arange(n)
        a, b = old.Resynthesis(train), Resynthesis(train)
        pool = ScenePool(("train", "extra"), size, train)
        g = torch.Generator().manual_seed(0)
        t_old = per_batch(lambda: a.pairs(idx, g), repeats)
        t_new = per_batch(lambda: b.pairs(idx, g, size), repeats)
        t_pool = per_batch(lambda: pool.pairs(idx, g, size), repeats)
        print(f"| {size} | {1e3 * t_old:.1f} | {1e3 * t_new:.1f} | {1e3 * t_pool:.1f} | "
              f"{t_old / t_new:.2f}x |")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [16, 32, 64])
