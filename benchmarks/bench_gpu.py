"""The arena on one accelerator, in one prepared run: PGD against a hand-written loop and ART,
and a tournament's throughput with one and with several matches on the device at once.

    python benchmarks/bench_gpu.py                      # cuda when there is one
    python benchmarks/bench_gpu.py --device cpu --size 16 --images 2 --steps 2 \\
        --restorers unet --eps 4 --concurrency 1 2       # the CPU smoke run (tests/test_bench_gpu.py)

1. PGD-``steps`` on one restorer (``--pgd-restorer``), ``images`` × 3 × ``size``²: the arena's PGD
   (Target, oracle ledger, EOT loop, best-iterate bookkeeping) vs the bare loop of
   benchmarks/bench_attacks.py (target: at most 1.05× its time) and vs ART's PGD through
   PyTorchRegressor (target: at most 0.5× ART's time); ART is skipped, saying so, where it is not
   installed.
2. The tournament: ``restorers`` × none × PGD-``steps`` × the ε list, oblivious, on the embedded
   test split at ``images`` × ``size``². For each concurrency k it runs k drivers at once on one
   SQLite file, each in its own process with the in-process executor on the same device; the
   drivers split the matches through the database's claims (README, "Several drivers"). So k
   matches share the device, with no Ray needed on the accelerator host. It prints wall time,
   matches per hour, the device's mean utilisation while the matches ran (NVML or nvidia-smi on
   CUDA; on the CPU the processes' CPU time over wall × cores), and k's speed-up over k = 1, and
   checks that every k stored the same scores.

Prints; asserts nothing. Figures belong in README.md ("Performance") with the device named.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `benchmarks.bench_attacks`, also when run as a script


def pgd_section(args) -> None:
    import importlib

    import torch

    from arena.plugins import load_registry
    from arena.threat import Budget, System, Target
    from benchmarks.bench_attacks import bare_pgd, batch, timed

    modules = [importlib.import_module("arena_plugins.attacks.pgd"),
               importlib.import_module(f"arena_plugins.restorers.{args.pgd_restorer}")]
    try:
        modules.append(importlib.import_module("arena_plugins.attacks.art"))
        import art  # noqa: F401 - the plugin imports ART lazily
        have_art = True
    except ImportError:
        have_art = False
    reg = load_registry(modules=tuple(modules), entrypoints=False)
    device = torch.device(args.device)
    model = reg.get("restorer", args.pgd_restorer).cls().load(device)
    lq, hq, data_label = batch(args.images, args.size, device)
    budget = Budget(norm="linf", eps=f"{args.eps[-1]}/255", steps=args.steps)
    system = System(model, [])
    step = 2.5
    alpha = step * budget.eps / budget.steps

    def run(name, **params):
        attack = reg.create("attack", name, params)
        target = Target(system, "oblivious", "mse", torch.Generator().manual_seed(1))
        return attack.run(target, lq, hq, budget, torch.Generator().manual_seed(0))

    fns = {"arena": lambda: run("pgd", random_start=False, step=step),
           "bare loop": lambda: bare_pgd(model, lq, hq, budget.eps, alpha, budget.steps)}
    if have_art:
        fns["ART"] = lambda: run("art", method="pgd", step=step)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    times, _ = timed(fns, args.repeats, sync, time.perf_counter)
    print(f"1. PGD-{args.steps}, {args.pgd_restorer}, {data_label}: {args.images} x 3 x {args.size}^2, "
          f"eps {args.eps[-1]}/255, {device}; wall s, best of {args.repeats}")
    for name, t in times.items():
        print(f"   {name:10s} {t:8.3f} s")
    print(f"   arena / bare loop: {times['arena'] / times['bare loop']:.3f} (target <= 1.05)")
    if have_art:
        print(f"   arena / ART:       {times['arena'] / times['ART']:.3f} (target <= 0.5)")
    else:
        print("   ART: not installed here, not compared (carry its wheel: benchmarks/gpu_wheels.sh)")


def config_text(args, name: str) -> str:
    restorers = "\n".join(f'[[restorers]]\nname = "{r}"\n' for r in args.restorers)
    budgets = "\n".join(f'[[budgets]]\nnorm = "linf"\neps = "{e}/255"\nsteps = {args.steps}\n' for e in args.eps)
    seeds = ", ".join(str(i) for i in range(args.seeds))
    return (f'name = "{name}"\nseeds = [{seeds}]\nthreat_models = ["oblivious"]\nsamples_per_match = 0\n'
            f'num_gpus = 0\n\n[data]\nname = "embedded"\nsplit = "test"\nimages = {args.images}\n'
            f'size = {args.size}\n\n{restorers}\n[[defenses]]\nname = "none"\n\n'
            f'[[attacks]]\nname = "pgd"\nrandom_start = false\n\n{budgets}')


class Utilisation:
    """The device's mean utilisation while the block runs, sampled every 0.2 s: NVML or
    nvidia-smi on CUDA. On the CPU the caller passes the children's CPU time instead."""

    def __init__(self, device: str):
        self.device, self.samples, self._stop = device, [], threading.Event()
        self._read = self._reader() if device.startswith("cuda") else None

    def _reader(self):
        index = int(self.device.partition(":")[2] or 0)
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # noqa: BLE001 - no NVML: ask nvidia-smi
            if not shutil.which("nvidia-smi"):
                return None
            cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", str(index)]
            return lambda: float(subprocess.run(cmd, capture_output=True, text=True).stdout.split()[0])

    def __enter__(self):
        if self._read is not None:
            threading.Thread(target=self._loop, daemon=True).start()
        return self

    def _loop(self):
        while not self._stop.wait(0.2):
            try:
                self.samples.append((time.time(), self._read()))
            except Exception:  # noqa: BLE001 - a failed reading is left out, not invented
                pass

    def __exit__(self, *exc):
        self._stop.set()

    def mean(self, start: float, end: float) -> float | None:
        """The mean reading between ``start`` and ``end`` (epoch seconds)."""
        inside = [v for t, v in self.samples if start <= t <= end]
        return statistics.mean(inside) if inside else None


def run_drivers(args, k: int, folder: Path, cache: Path) -> dict:
    """k drivers at once on one database, each its own process: wall time, utilisation, scores.
    ``cache``: one folder for every run, so the embedded data is made once, by the warm-up."""
    import resource

    config = folder / f"k{k}.toml"
    config.write_text(config_text(args, f"bench-gpu-k{k}"))
    db = folder / f"k{k}.db"
    env = {**os.environ, "ARENA_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "arena.cli", "run", str(config), "--db", str(db), "--executor", "local",
           "--device", args.device, "--quiet"]
    logs = [folder / f"driver-{i}.log" for i in range(k)]  # files, not pipes: a full pipe would stall a driver
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with Utilisation(args.device) as util:
        t0 = time.perf_counter()
        procs = []
        for log in logs:
            with open(log, "w") as out:
                procs.append(subprocess.Popen(cmd, env=env, cwd=folder, stdout=out, stderr=subprocess.STDOUT))
        for p in procs:
            p.wait()
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    for p, log in zip(procs, logs):
        if p.returncode != 0:
            raise SystemExit(f"a driver of k = {k} failed (exit {p.returncode}):\n{log.read_text()[-3000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    scores, start, end = stored(db)
    util = util.mean(start, end) if args.device.startswith("cuda") else 100 * cpu / (wall * os.cpu_count())
    return {"wall": wall, "span": end - start, "util": util, "scores": scores}


def stored(db: Path) -> tuple[dict, float, float]:
    """Every stored score, and when the first match started and the last one finished: the
    span in which the device worked, without the drivers' start-up and re-scoring."""
    from sqlalchemy import func, select

    from arena.store import models as m
    from arena.store.db import open_reader

    mt = m.matches
    with open_reader(str(db)).connect() as conn:
        rows = conn.execute(select(mt.c.restorer, mt.c.eps, mt.c.seed, mt.c.status, m.scores.c.image,
                                   m.scores.c.adv_psnr).join(m.scores, m.scores.c.match_id == mt.c.id, isouter=True))
        scores = {(r.restorer, round(r.eps, 9), r.seed, r.image): (r.status, r.adv_psnr) for r in rows}
        start, end = conn.execute(select(func.min(mt.c.started_at), func.max(mt.c.finished_at))).one()
    return scores, start, end


def tournament_section(args) -> None:
    matches = len(args.restorers) * len(args.eps) * args.seeds
    print(f"\n2. tournament: {' '.join(args.restorers)} x none x PGD-{args.steps} x eps "
          f"{', '.join(f'{e}/255' for e in args.eps)} x {args.seeds} seed(s), oblivious, {args.images} x "
          f"{args.size}^2: {matches} matches; k drivers at once on one device ({args.device}). "
          "span: first match's start to last match's end (matches/h and the speed-up use it); "
          "wall: also the drivers' start-up and re-scoring")
    unit = "GPU util %" if args.device.startswith("cuda") else "CPU use %"
    print(f"   {'k':>3} {'span s':>9} {'wall s':>9} {'matches/h':>11} {unit:>11} {'speed-up':>9}  scores")
    base = None
    with tempfile.TemporaryDirectory() as d:
        warm, cache = Path(d) / "warm", Path(d) / "cache"
        warm.mkdir()
        run_drivers(args, 1, warm, cache)  # makes the data cache, warms the file cache: not timed
        for k in args.concurrency:  # each driver is a new process: it pays its own CUDA start-up
            folder = Path(d) / f"k{k}"
            folder.mkdir()
            r = run_drivers(args, k, folder, cache)
            base = base or r
            same = "same as k=1" if r["scores"] == base["scores"] else _difference(base["scores"], r["scores"])
            util = f"{r['util']:.0f}" if r["util"] is not None else "n/a"
            print(f"   {k:>3} {r['span']:9.1f} {r['wall']:9.1f} {3600 * matches / r['span']:11.0f} {util:>11} "
                  f"{base['span'] / r['span']:8.2f}x  {same}")


def _difference(a: dict, b: dict) -> str:
    if a.keys() != b.keys():
        return f"DIFFERENT matches ({len(a)} vs {len(b)} rows)"
    worst = max(abs((a[k][1] or 0) - (b[k][1] or 0)) for k in a)
    return f"differ by up to {worst:.2e} dB"


def main(argv=None) -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eps", type=int, nargs="+", default=[1, 2, 4, 8], help="L-inf budgets, in 1/255")
    ap.add_argument("--restorers", nargs="+", default=["unet", "discnet", "nafnet", "uformer", "udcunet"])
    ap.add_argument("--seeds", type=int, default=2, help="match seeds (more matches per system)")
    ap.add_argument("--pgd-restorer", default="unet")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-pgd", action="store_true")
    args = ap.parse_args(argv)
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)"
    print(f"device: {name}; torch {torch.__version__}")
    if not args.skip_pgd:
        pgd_section(args)
    tournament_section(args)


if __name__ == "__main__":
    main()
