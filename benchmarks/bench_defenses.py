"""What each defense costs: purification time per megapixel beside the restorer's own, and the
memory of a full-gradient adaptive step through the diffusion sampler with and without
gradient checkpointing.

    .venv/bin/python benchmarks/bench_defenses.py [--images 8] [--mem-images 2] [--size 32]

Memory is measured in a fresh subprocess per setting. On CPU: the peak resident set size during
the step (the kernel's high-water mark, reset just before it through /proc/self/clear_refs)
minus the resident size at its start; on a GPU: ``torch.cuda.max_memory_allocated`` above the
allocation at the start.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: first calls allocate and pick kernels
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def restorer_module(device):
    from arena_plugins.restorers.unet import UNet

    return UNet(UNet.validate({})).build().eval().requires_grad_(False).to(device)


def defenses() -> list[tuple[str, object]]:
    from arena_plugins.defenses import bitdepth, diffpure, jpeg, median, noise, tvm

    def make(cls, **params):
        return cls(cls.validate(params))

    rows = [(f"diffpure ddpm {n} steps" if n else "diffpure ddpm all 100 steps",
             make(diffpure.DiffPure, sampler="ddpm", steps=n)) for n in (None, 20)]
    rows += [(f"diffpure ddim {n} steps", make(diffpure.DiffPure, sampler="ddim", steps=n))
             for n in (5, 10, 20)]
    rows += [("jpeg q75", make(jpeg.JPEG)), ("median 3x3", make(median.Median)),
             ("tvm", make(tvm.TVM)), ("bitdepth 5", make(bitdepth.BitDepth)),
             ("noise", make(noise.Noise))]
    return rows


def cost_table(images: int, size: int, device) -> None:
    x = torch.rand(images, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    mp = images * size * size / 1e6
    net = restorer_module(device)
    with torch.no_grad():
        base = timed(lambda: net(x), 5) * 1000 / mp
        print(f"purification cost, {images} images of {size}x{size} on {device} "
              f"({torch.get_num_threads()} threads), t*=0.1")
        print(f"{'':28s} {'ms / MP':>12s} {'x restorer':>11s}")
        print(f"{'restorer unet (reference)':28s} {base:12.0f} {1.0:11.2f}")
        for label, d in defenses():
            g = torch.Generator().manual_seed(0)
            repeats = 1 if "ddpm" in label else 2
            ms = timed(lambda: d.purify(x, g), repeats) * 1000 / mp
            print(f"{label:28s} {ms:12.0f} {ms / base:11.2f}")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    # Writing 5 resets the high-water mark VmHWM to the current RSS (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def memory_probe(checkpointed: bool, images: int, size: int, sampler: str, steps: int) -> dict:
    """One adaptive gradient step (restorer after purifier) in this process; its peak memory."""
    from arena_plugins.defenses.diffpure import load_purifier

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    p = load_purifier(None, device)
    net = restorer_module(device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(images, 3, size, size, generator=g).to(device).requires_grad_(True)
    hq = torch.rand(images, 3, size, size, generator=g).to(device)
    with torch.no_grad():  # warm-up outside the measured window
        net(p.purify(x, 0.1, sampler, 1, generator=g))
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        _reset_peak_rss()
        before = _status_kb("VmRSS") * 1024
    t0 = time.perf_counter()
    y = net(p.purify(x, 0.1, sampler, steps, generator=g, checkpointed=checkpointed))
    (grad,) = torch.autograd.grad((y - hq).pow(2).mean(), x)
    seconds = time.perf_counter() - t0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = _status_kb("VmHWM") * 1024 - before
    return {"peak_mb": peak / 2**20, "seconds": seconds, "finite": bool(torch.isfinite(grad).all()),
            "device": str(device)}


def memory_table(images: int, size: int, threads: int) -> None:
    # Without checkpointing, memory grows with the step count: keep the batch small.
    print(f"\nfull-gradient adaptive step (purify + restore + backward), {images} images of "
          f"{size}x{size}, t*=0.1; peak memory above the pre-step level")
    print(f"{'sampler':14s} {'plain MB':>10s} {'ckpt MB':>10s} {'ratio':>7s} "
          f"{'plain s':>8s} {'ckpt s':>8s}")
    for sampler, steps in (("ddim", 10), ("ddim", 20), ("ddpm", 50)):
        res = {}
        for ckpt in (False, True):
            out = subprocess.run(
                [sys.executable, __file__, "--probe", json.dumps([ckpt, images, size, sampler, steps]),
                 "--threads", str(threads)], capture_output=True, text=True, check=True)
            res[ckpt] = json.loads(out.stdout.strip().splitlines()[-1])
        plain, ck = res[False], res[True]
        print(f"{sampler + ' ' + str(steps):14s} {plain['peak_mb']:10.0f} {ck['peak_mb']:10.0f} "
              f"{plain['peak_mb'] / max(ck['peak_mb'], 1.0):7.1f} {plain['seconds']:8.1f} "
              f"{ck['seconds']:8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--mem-images", type=int, default=2, help="batch of the memory probe")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(memory_probe(*json.loads(args.probe))))
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cost_table(args.images, args.size, device)
    memory_table(args.mem_images, args.size, args.threads)


if __name__ == "__main__":
    main()
