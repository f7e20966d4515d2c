"""CPU cost of one training step per restorer family (one thread), the numbers that size the GPU
recipe of scripts/train_zoo_gpu.sh: the operators a step dispatches (each a kernel launch on a
GPU), the time of a step too small to compute anything (2 x 16 px: the per-operator overhead),
and of the CPU recipe's step (8 x 64 px) and the GPU recipe's (32 x 128 px).

    .venv/bin/python scripts/bench_train_step.py [family ...]
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from arena.api import run_restorer
from arena.plugins import load_registry

FAMILIES = ["unet", "nafnet", "udcunet", "discnet", "uformer", "purifier"]
# The GPU estimate (README, "Training on a GPU"): a step dispatches its kernels at about LAUNCH
# seconds each and computes for its 32 x 128 px CPU time divided by RATIO (an H200 in bf16
# against one shared CPU thread in fp32, a conservative guess); six runs share the GPU, so when
# their compute adds up to more than the GPU, every run slows by that factor.
LAUNCH, RATIO, BUDGET_S = 10e-6, 2000.0, 420.0
# operators that only make views or metadata: no kernel on a GPU
VIEWS = {"aten::view", "aten::as_strided", "aten::reshape", "aten::_reshape_alias", "aten::t",
         "aten::transpose", "aten::permute", "aten::expand", "aten::slice", "aten::select",
         "aten::unsqueeze", "aten::squeeze", "aten::detach", "aten::alias", "aten::empty",
         "aten::empty_strided", "aten::empty_like", "aten::resize_", "aten::unflatten",
         "aten::flatten", "aten::split", "aten::chunk", "aten::narrow", "aten::contiguous",
         "aten::lift_fresh", "aten::_unsafe_view", "aten::view_as", "aten::expand_as"}


def purifier_step(batch: int, side: int):
    from arena_plugins.defenses.purifier import DEFAULT_UNET, build_unet

    torch.manual_seed(0)
    model = build_unet(dict(DEFAULT_UNET, sample_size=side)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, foreach=True)
    x, t = torch.rand(batch, 3, side, side), torch.randint(0, 500, (batch,))

    def step():
        loss = F.mse_loss(model(x, t).sample, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
    return step


def step_fn(name: str, batch: int, side: int):
    if name == "purifier":  # the GPU recipe's purifier step is 64 x 64 px, not 32 x 128
        return purifier_step(batch * 2, side // 2) if side == 128 else purifier_step(batch, side)
    registry = load_registry()
    restorer = registry.create("restorer", name)
    torch.manual_seed(0)
    model = restorer.build().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    lq, hq = torch.rand(batch, 3, side, side), torch.rand(batch, 3, side, side)
    code = torch.randn(batch, 5)

    def step():
        loss = F.l1_loss(run_restorer(model, lq, code, restorer.needs_psf), hq)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
    return step


def timed(step, repeats: int) -> float:
    step()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - t0) / repeats


def kernels(step) -> int:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    leaves = [e for e in prof.events() if not e.cpu_children and e.name.startswith("aten::")]
    return sum(e.name not in VIEWS for e in leaves)


def gpu_steps(rows: dict[str, tuple[int, float]]) -> dict[str, tuple[float, int]]:
    """Per family (kernels, CPU s/step at the GPU recipe's size): est. GPU s/step, steps."""
    alone = {f: (n * LAUNCH + t / RATIO, t / RATIO) for f, (n, t) in rows.items()}
    demand = max(1.0, sum(c / s for s, c in alone.values()))
    return {f: (s * demand, int(0.8 * BUDGET_S / (s * demand)) // 100 * 100)
            for f, (s, _) in alone.items()}


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    print("| family | kernels/step | s/step 2x16 px | s/step 8x64 px | s/step 32x128 px |")
    print("|---|---|---|---|---|")
    rows = {}
    for name in names:
        tiny = step_fn(name, 2, 16)
        n = kernels(tiny)
        t_tiny = timed(tiny, 10)
        t_cpu = timed(step_fn(name, 8, 64), 5)
        t_gpu = timed(step_fn(name, 32, 128), 1)
        rows[name] = (n, t_gpu)
        print(f"| {name} | {n} | {t_tiny:.4f} | {t_cpu:.3f} | {t_gpu:.2f} |", flush=True)
    for name, (s, steps) in gpu_steps(rows).items():
        print(f"{name}: est. {1e3 * s:.1f} ms per GPU step beside the others, {steps} steps "
              f"in 80% of {BUDGET_S:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:] or FAMILIES)
