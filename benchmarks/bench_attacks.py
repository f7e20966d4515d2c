"""The arena's PGD side by side with ART's and with a bare PyTorch loop; memory layouts.

1. arena PGD vs ART PGD (through PyTorchRegressor): time, damage (PSNR drop, dB), ratios.
2. arena PGD vs a hand-written PGD loop, same batch, same steps, same arithmetic: the arena's
   plumbing (Target, EOT loop, trace, best-iterate bookkeeping, projection helper) should cost
   at most 5% more time.
3. One PGD step (forward + backward) of a small UNet, channels_last vs contiguous.

Both PGDs start at the clean input (ART refuses random starts for regressors).

    python benchmarks/bench_attacks.py [--size 64] [--images 8] [--steps 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import importlib
import time

import torch

from arena.metrics import psnr
from arena.plugins import load_registry
from arena.threat import Budget, System, Target


def registry():
    modules = [importlib.import_module(f"arena_plugins.{m}")
               for m in ("attacks.pgd", "attacks.art", "restorers.unet")]
    return load_registry(modules=tuple(modules), entrypoints=False)


def restorer(reg, device):
    """The zoo's UNet with its weights, or, without them, a seeded random one (timings hold,
    damage is then that of an untrained network)."""
    cls = reg.get("restorer", "unet").cls
    try:
        return cls().load(device), "unet (shipped weights)"
    except Exception:
        torch.manual_seed(0)
        model = cls().build()
        torch.nn.init.normal_(model.out.weight, std=0.05)  # zero-initialised: would be identity
        model = model.to(device).eval().requires_grad_(False)
        return model, "unet (random weights: no weights shipped)"


def batch(images, size, device):
    try:
        from arena.data.embedded import load_embedded

        data = load_embedded("test", images=images, size=size)
        return data.lq.to(device), data.hq.to(device), "embedded test split"
    except Exception:
        g = torch.Generator().manual_seed(0)
        hq = torch.rand(images, 3, size, size, generator=g)
        return (0.8 * hq + 0.1).to(device), hq.to(device), "random tensors"


def timed(fns, repeats, sync, clock):
    """Best-of-repeats seconds of each function on ``clock``, and its last output.

    The functions run interleaved after one warm-up each, so a burst of load from elsewhere
    hits all of them alike; the minimum is the least disturbed run (as timeit reports).
    """
    outs = {name: fn() for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = clock()
            outs[name] = fn()
            sync()
            times[name].append(clock() - t0)
    return {name: min(t) for name, t in times.items()}, outs


def bare_pgd(model, lq, hq, eps, alpha, steps):
    """PGD with no framework: the floor the arena's PGD is measured against."""
    x = lq.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        loss = (model(x) - hq).pow(2).flatten(1).mean(1)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        x = (lq + (x.detach() + alpha * grad.sign() - lq).clamp(-eps, eps)).clamp(0, 1)
    return x


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eps", default="8/255")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # On a CPU shared with other jobs, wall time mostly measures the neighbours; the process's
    # CPU time is what the work itself costs. On a GPU, synchronised wall time is.
    clock, clock_label = ((time.perf_counter, "wall") if device.type == "cuda"
                          else (time.process_time, "CPU"))
    reg = registry()
    model, model_label = restorer(reg, device)
    lq, hq, data_label = batch(args.images, args.size, device)
    budget = Budget(norm="linf", eps=args.eps, steps=args.steps)
    system = System(model, [])
    with torch.no_grad():
        clean_psnr = psnr(model(lq), hq)

    def damage(x):
        with torch.no_grad():
            return float((clean_psnr - psnr(model(x), hq)).mean())

    def run(name, **params):
        attack = reg.create("attack", name, params)
        target = Target(system, "oblivious", "mse", torch.Generator().manual_seed(1))
        return attack.run(target, lq, hq, budget, torch.Generator().manual_seed(0))

    print(f"{model_label}; {data_label}: {args.images} x 3 x {args.size} x {args.size}; "
          f"linf eps {args.eps}, {args.steps} steps; {device}, {torch.get_num_threads()} threads; "
          f"{clock_label} time, best of {args.repeats}")
    step = 2.5  # the arena's default step, eps * 2.5 / steps, given to all three
    alpha = step * budget.eps / budget.steps
    t, x = timed({
        "arena": lambda: run("pgd", random_start=False, step=step),
        "ART": lambda: run("art", method="pgd", step=step),
        "bare": lambda: bare_pgd(model, lq, hq, budget.eps, alpha, budget.steps),
    }, args.repeats, sync, clock)
    t_arena, t_art, t_bare = t["arena"], t["ART"], t["bare"]
    x_arena, x_art, x_bare = x["arena"], x["ART"], x["bare"]
    print("\n1. arena PGD vs ART PGD")
    print(f"{'':12}{clock_label + ' s':>10}{'damage (dB)':>13}")
    for label, t, x in (("arena", t_arena, x_arena), ("ART", t_art, x_art)):
        print(f"{label:12}{t:10.3f}{damage(x):13.3f}")
    print(f"ratio ART / arena time: {t_art / t_arena:.2f}; "
          f"damage arena - ART: {damage(x_arena) - damage(x_art):+.3f} dB")

    print("\n2. arena PGD vs bare PyTorch PGD")
    print(f"{'':12}{clock_label + ' s':>10}{'damage (dB)':>13}")
    for label, t, x in (("arena", t_arena, x_arena), ("bare", t_bare, x_bare)):
        print(f"{label:12}{t:10.3f}{damage(x):13.3f}")
    overhead = t_arena / t_bare - 1
    verdict = "within" if overhead <= 0.05 else "OVER"
    print(f"arena overhead: {100 * overhead:+.1f}% ({verdict} the 5% target; the arena also runs "
          "one extra forward, to rank the last iterate)")

    print("\n3. one PGD step (forward + backward) of the UNet: memory layout")
    x = lq.clone()

    def step_fn(m, inp):
        def fn():
            xi = inp.detach().requires_grad_(True)
            (m(xi) - hq).pow(2).mean().backward()
        return fn

    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    t, _ = timed({"contiguous": step_fn(model, x), "channels_last": step_fn(model_cl, x_cl)},
                 args.repeats * 4, sync, clock)
    t_contig, t_cl = t["contiguous"], t["channels_last"]
    print(f"contiguous {1000 * t_contig:.1f} ms, channels_last {1000 * t_cl:.1f} ms, "
          f"ratio contiguous / channels_last {t_contig / t_cl:.2f} (> 1: channels_last faster)")


if __name__ == "__main__":
    main()
