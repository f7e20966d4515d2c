"""Tiled vs untiled restoration at full resolution: peak memory, time and scores side by side.

    .venv/bin/python benchmarks/bench_tiling.py [--size 512] [--images 2] [--tile 256]
        [--overlap 32] [--restorers tiny unet nafnet nafnet:tlc_window=96]
        [--part restorers agreement tournament] [--settings 256/32 384/256]

restorers (NAME or NAME:param=int,...): each (restorer, mode) runs in its own subprocess on
`embedded-full` test images: a clean restoration (no grad) and one attack gradient (the mse
loss's gradient w.r.t. the input, what FGSM/PGD take). Peak memory is the subprocess's peak RSS above what it held once torch,
the model and the images were loaded.

agreement: forward only, in this process: each restorer's untiled PSNR against the ground
truth, and the PSNR of its tiled output against its untiled one (dB; 100 or more is float
rounding: exact) at each --settings tile/overlap.

tournament: the tournament of tests/test_tiling.py (unet, FGSM and 2-step PGD, oblivious, no
defense, `--images` photographs at `--size`) run by arena's driver with the local executor,
each mode in a fresh subprocess: untiled, tiled exactly for unet (384 px tiles overlapping by
256: its 58 px receptive field fits in the blend's zero margin) and tiled at --tile/--overlap.
Peak memory is the driver process's VmHWM (peak resident set) from the tournament's start (data
synthesised, peak reset through /proc/self/clear_refs), with its rise above the resident set
then (the fresh re-scoring process the driver spawns is not measured); every stored score is
compared with untiled's.

Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from arena.tiling import enable

CHILD = r"""
import json, resource, sys, time
import torch
from arena.data import load_data
from arena.metrics import psnr
from arena.plugins import load_registry
name, size, images, tile, overlap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
name, _, given = name.partition(":")
params = {k: int(v) for k, v in (kv.split("=") for kv in given.split(",") if kv)}
r = load_registry().create("restorer", name, {**params, "tile": tile, "overlap": overlap})
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
                          env=child_env())
    return json.loads(done.stdout.strip().splitlines()[-1])


TOURNAMENT = r"""
import json, sys, time
from sqlalchemy import select
from arena.plan import parse_config
from arena.run.driver import run_tournament
from arena.store import models as m
from arena.store.db import open_reader
size, images, tile, overlap, db = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
t = parse_config({
    "name": "tiling-bench", "seed": 0, "threat_models": ["oblivious"], "samples_per_match": 0,
    "data": {"name": "embedded-full", "split": "test", "images": images, "size": size},
    "restorers": [{"name": "unet", "tile": tile, "overlap": overlap}], "defenses": ["none"],
    "attacks": ["fgsm", {"name": "pgd", "restarts": 1}],
    "budgets": [{"norm": "linf", "eps": "8/255", "steps": 2}],
})
from arena.data import load_data
load_data("embedded-full", "test", size=size, images=images)  # synthesised (and cached) before the peak is reset
def status(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # Linux: VmHWM starts again from the resident set now
base = status("VmRSS")
t0 = time.perf_counter()
report = run_tournament(t, db, executor="local", progress=False)
wall = time.perf_counter() - t0
hwm = status("VmHWM")
cols = ("clean_psnr", "clean_ssim", "adv_psnr", "adv_ssim", "linf", "l2")
with open_reader(db).connect() as conn:
    rows = conn.execute(select(m.matches.c.attack, m.scores.c.image, *(m.scores.c[c] for c in cols)).join(m.scores)).all()
print(json.dumps({"counts": report.counts, "wall_s": wall, "hwm_mb": hwm / 1024, "above_mb": (hwm - base) / 1024,
                  "scores": {f"{r[0]}|{r[1]}": dict(zip(cols, r[2:])) for r in rows}}))
"""


def child_env() -> dict:
    # a fixed mmap threshold: freed tensors go back to the system, so the resident set follows
    # what is live instead of what glibc kept from earlier peaks
    return dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"),
                MALLOC_MMAP_THRESHOLD_=os.environ.get("MALLOC_MMAP_THRESHOLD_", "131072"))


def tournament(args, tmp: str) -> None:
    modes = (("untiled", 0, 32), ("tiled, exact", 384, 256), ("tiled", args.tile, args.overlap))
    print(f"\ntournament: unet x (fgsm, pgd 2 steps), no defense, oblivious, {args.images} images "
          f"at {args.size} px, local executor, one fresh process per mode")
    print(f"{'mode':<14} {'tile/overlap':>12} {'matches':>8} {'wall s':>7} {'peak MB':>8} "
          f"{'above start':>11} {'max |dPSNR| dB':>15} {'max |dSSIM|':>12}")
    ref = None
    for mode, tile, overlap in modes:
        db = os.path.join(tmp, f"t-{tile}-{overlap}.db")
        done = subprocess.run([sys.executable, "-c", TOURNAMENT, str(args.size), str(args.images), str(tile),
                               str(overlap), db], capture_output=True, text=True, check=True, env=child_env())
        r = json.loads(done.stdout.strip().splitlines()[-1])
        ref = ref or r["scores"]
        assert set(r["scores"]) == set(ref), "the modes stored different matches or images"
        dp = max(abs(s[c] - ref[k][c]) for k, s in r["scores"].items() for c in ("clean_psnr", "adv_psnr"))
        ds = max(abs(s[c] - ref[k][c]) for k, s in r["scores"].items() for c in ("clean_ssim", "adv_ssim"))
        done_n = sum(r["counts"].values())
        print(f"{mode:<14} {f'{tile}/{overlap}':>12} {done_n:>8} {r['wall_s']:7.1f} {r['hwm_mb']:8.0f} "
              f"{r['above_mb']:11.0f} {dp:15.2e} {ds:12.2e}")


def restorers(args, tmp: str) -> None:
    import torch

    print(f"embedded-full, {args.images} images at {args.size} px; tiles {args.tile} px, overlap {args.overlap}")
    print(f"{'restorer':<22} {'mode':<8} {'PSNR dB':>9} {'clean s':>8} {'grad s':>8} {'peak MB':>8}")
    for name in args.restorers:
        rows = {}
        for mode, tile in (("untiled", 0), ("tiled", args.tile)):
            path = os.path.join(tmp, f"{name.replace(':', '-')}-{mode}.pt")
            rows[mode] = r = measure(name, args.size, args.images, tile, args.overlap, path)
            print(f"{name:<22} {mode:<8} {r['psnr']:9.4f} {r['clean_s']:8.2f} {r['grad_s']:8.2f} {r['peak_mb']:8.0f}")
        a, b = (torch.load(os.path.join(tmp, f"{name.replace(':', '-')}-{m}.pt"), weights_only=True)
                for m in ("untiled", "tiled"))
        out_diff = float((a["out"] - b["out"]).abs().max())
        agree = float(10 * torch.log10(1 / (a["out"] - b["out"]).pow(2).mean().clamp_min(1e-20)))
        grad_rel = float((a["grad"] - b["grad"]).abs().max() / a["grad"].abs().max())
        u, t = rows["untiled"], rows["tiled"]
        print(f"{name:<22} tiled/untiled: score {t['psnr'] - u['psnr']:+.2e} dB, output max |diff| "
              f"{out_diff:.2e}, PSNR(tiled, untiled) {agree:.1f} dB, gradient max |diff| / max |grad| {grad_rel:.2e}, peak memory "
              f"{t['peak_mb'] / max(u['peak_mb'], 1):.2f}x, gradient time {t['grad_s'] / u['grad_s']:.2f}x")


def agreement(args) -> None:
    import torch

    from arena.data import load_data
    from arena.metrics import psnr
    from arena.plugins import load_registry

    registry = load_registry()
    data = load_data("embedded-full", "test", size=args.size, images=args.images)
    settings = [tuple(int(v) for v in st.split("/")) for st in args.settings]
    print(f"\nagreement: PSNR(tiled, untiled) in dB, {args.images} images at {args.size} px, forward only")
    print(f"{'restorer':<22} {'untiled PSNR vs truth':>22} " + " ".join(f"{f'{t}/{o}':>10}" for t, o in settings))
    for spec in args.restorers:
        name, _, given = spec.partition(":")
        params = {k: int(v) for k, v in (kv.split("=") for kv in given.split(",") if kv)}
        r = registry.create("restorer", name, {**params, "tile": 0})
        model = r.load("cpu")
        run = (lambda x: model(x, data.code)) if r.needs_psf else model
        cells = []
        with torch.no_grad():
            ref = run(data.lq)
            for tile, overlap in settings:
                enable(model, tile, overlap)
                err = (run(data.lq) - ref).pow(2).mean()
                cells.append(f"{float(10 * torch.log10(1 / err)) if err > 0 else float('inf'):10.1f}")
        truth = float(psnr(ref.clamp(0, 1), data.hq).mean())
        print(f"{spec:<22} {truth:22.2f} " + " ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--restorers", nargs="+", default=["tiny", "unet"])
    ap.add_argument("--part", nargs="+", choices=["restorers", "agreement", "tournament"],
                    default=["restorers", "agreement", "tournament"])
    ap.add_argument("--settings", nargs="+", default=["256/32", "384/256"], help="tile/overlap pairs (agreement)")
    args = ap.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if "restorers" in args.part:
            restorers(args, tmp)
        if "agreement" in args.part:
            agreement(args)
        if "tournament" in args.part:
            tournament(args, tmp)


if __name__ == "__main__":
    main()
