"""Tiled vs untiled restoration at full resolution: peak memory, time and scores side by side.

    .venv/bin/python benchmarks/bench_tiling.py [--size 512] [--images 2] [--tile 256]
        [--overlap 32] [--restorers tiny unet]

Each (restorer, mode) runs in its own subprocess on `embedded-full` test images: a clean
restoration (no grad) and one attack gradient (the mse loss's gradient w.r.t. the input, what
FGSM/PGD take). Peak memory is the subprocess's peak RSS above what it held once torch, the
model and the images were loaded. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch
from arena.data import load_data
from arena.metrics import psnr
from arena.plugins import load_registry
name, size, images, tile, overlap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
r = load_registry().create("restorer", name, {"tile": tile, "overlap": overlap})
model = r.load("cpu")
data = load_data("embedded-full", "test", size=size, images=images)
run = (lambda x: model(x, data.code)) if r.needs_psf else model
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
with torch.no_grad():
    out = run(data.lq).clamp(0, 1)
t_clean = time.perf_counter() - t0
x = data.lq.clone().requires_grad_(True)
t0 = time.perf_counter()
(g,) = torch.autograd.grad((run(x) - data.hq).pow(2).mean(), x)
t_grad = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
torch.save({"out": out, "grad": g}, sys.argv[6])
print(json.dumps({"psnr": float(psnr(out, data.hq).mean()), "clean_s": t_clean, "grad_s": t_grad,
                  "peak_mb": (peak - base) / 1024}))
"""


def measure(name: str, size: int, images: int, tile: int, overlap: int, path: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, name, str(size), str(images), str(tile),
                           str(overlap), path], capture_output=True, text=True, check=True,
                          env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2")))
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--restorers", nargs="+", default=["tiny", "unet"])
    args = ap.parse_args()
    import tempfile

    import torch

    print(f"embedded-full, {args.images} images at {args.size} px; tiles {args.tile} px, overlap {args.overlap}")
    print(f"{'restorer':<10} {'mode':<8} {'PSNR dB':>9} {'clean s':>8} {'grad s':>8} {'peak MB':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.restorers:
            rows = {}
            for mode, tile in (("untiled", 0), ("tiled", args.tile)):
                path = os.path.join(tmp, f"{name}-{mode}.pt")
                rows[mode] = r = measure(name, args.size, args.images, tile, args.overlap, path)
                print(f"{name:<10} {mode:<8} {r['psnr']:9.4f} {r['clean_s']:8.2f} {r['grad_s']:8.2f} {r['peak_mb']:8.0f}")
            a, b = (torch.load(os.path.join(tmp, f"{name}-{m}.pt"), weights_only=True) for m in ("untiled", "tiled"))
            out_diff = float((a["out"] - b["out"]).abs().max())
            grad_rel = float((a["grad"] - b["grad"]).abs().max() / a["grad"].abs().max())
            u, t = rows["untiled"], rows["tiled"]
            print(f"{name:<10} tiled/untiled: score {t['psnr'] - u['psnr']:+.2e} dB, output max |diff| "
                  f"{out_diff:.2e}, gradient max |diff| / max |grad| {grad_rel:.2e}, peak memory "
                  f"{t['peak_mb'] / max(u['peak_mb'], 1):.2f}x, gradient time {t['grad_s'] / u['grad_s']:.2f}x")


if __name__ == "__main__":
    main()
