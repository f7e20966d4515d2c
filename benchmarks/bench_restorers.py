"""The restorer zoo side by side: forward and forward+backward time per megapixel.

Forward+backward is what a white-box attack pays per step (gradient with respect to the input,
weights frozen). The last column compares channels_last with the default contiguous layout
(ratio > 1: channels_last is faster).

    python benchmarks/bench_restorers.py [--size 128] [--batch 2] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib

import torch
from torch.utils import benchmark

FAMILIES = ["unet", "discnet", "nafnet", "uformer", "udcunet"]


def restorer_class(name: str):
    from arena.plugins import load_registry

    module = importlib.import_module(f"arena_plugins.restorers.{name}")
    return load_registry(modules=(module,), entrypoints=False).get("restorer", name).cls


def seconds(fn, min_run_time: float) -> float:
    fn()  # warm-up: allocator, kernel selection
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(
        min_run_time=min_run_time).median


def measure(name: str, size: int, batch: int, device: torch.device, min_run_time: float) -> dict:
    cls = restorer_class(name)
    model = cls().build().to(device).eval().requires_grad_(False)
    x = torch.rand(batch, 3, size, size, device=device)
    extra = (torch.randn(batch, 5, device=device),) if cls.needs_psf else ()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def forward(inp=x):
        with torch.no_grad():
            model(inp, *extra)
        sync()

    def forward_backward():
        xi = x.clone().requires_grad_(True)
        model(xi, *extra).square().mean().backward()
        sync()

    mpix = batch * size * size / 1e6
    fwd = seconds(forward, min_run_time)
    fwd_bwd = seconds(forward_backward, min_run_time)
    model_cl = model.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def forward_cl():
        with torch.no_grad():
            model_cl(x_cl, *extra)
        sync()

    fwd_cl = seconds(forward_cl, min_run_time)
    return {
        "name": name, "params": sum(p.numel() for p in model.parameters()),
        "fwd_ms_mpix": 1e3 * fwd / mpix, "fwd_bwd_ms_mpix": 1e3 * fwd_bwd / mpix,
        "cl_speedup": fwd / fwd_cl,
    }


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--min-run-time", type=float, default=0.5)
    ap.add_argument("--families", nargs="*", default=FAMILIES)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    rows = [measure(n, a.size, a.batch, device, a.min_run_time) for n in a.families]
    base = rows[0]["fwd_ms_mpix"]
    print(f"device {device}, {torch.get_num_threads()} threads, batch {a.batch} x {a.size}^2")
    print(f"{'restorer':10s} {'params':>9s} {'fwd ms/MP':>10s} {'fwd+bwd ms/MP':>14s} "
          f"{'bwd/fwd':>8s} {'vs ' + rows[0]['name']:>9s} {'ch_last x':>10s}")
    for r in rows:
        fwd, both = r["fwd_ms_mpix"], r["fwd_bwd_ms_mpix"]
        print(f"{r['name']:10s} {r['params']:9d} {fwd:10.0f} {both:14.0f} {both / fwd:8.2f} "
              f"{fwd / base:9.2f} {r['cl_speedup']:10.2f}")
    return rows


if __name__ == "__main__":
    main()
