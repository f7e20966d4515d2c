"""Is the standard suite converged? Robust PSNR per system under the last release's default
attacks (FGSM, PGD-10 with 2 restarts, noise), under `standard`, and under `standard` with its
iterations, queries and EOT draws doubled, side by side with wall time.

    .venv/bin/python benchmarks/bench_suite.py [--restorers unet nafnet] [--defenses none jpeg]
        [--eps 4 8] [--threats oblivious adaptive] [--images 8] [--size 32] [--split val]
    .venv/bin/python benchmarks/bench_suite.py --config configs/standard.toml   # its world

--config takes the restorers and defenses (with their parameters) from a tournament config;
--restorers/--defenses then pick among them by name. The images come from the embedded
benchmark's held-out "val" photographs by default, so iterations are chosen without reading
the test split (--split test reports on it).

A suite version is converged when the last two columns agree within 0.1 dB on every system
(issue "The standard evaluation"). Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import arena.suite as suite_module
from arena.plan import parse_config, read_config
from arena.plugins import load_registry
from arena.run.driver import run_tournament
from arena.store import views
from arena.store.db import open_reader

OLD_DEFAULT = ["fgsm", {"name": "pgd", "random_start": False, "restarts": 2}, "noise"]


def doubled(suite):
    return replace(suite, version=f"{suite.version}x2", eot_factor=2 * suite.eot_factor, attacks=tuple(
        replace(a, steps=a.steps and 2 * a.steps, queries=a.queries and 2 * a.queries) for a in suite.attacks))


def _name(entry) -> str:
    return entry if isinstance(entry, str) else entry["name"]


def world(args) -> tuple[list, list]:
    """The restorers and defenses to run: names, or a config's entries picked by name."""
    if not args.config:
        return args.restorers or ["unet", "nafnet"], args.defenses or ["none", "jpeg"]
    t = read_config(args.config)  # validated: a bad config is one line
    pick = lambda entries, names: [e for e in entries if not names or _name(e) in names]  # noqa: E731
    return pick(t.restorers, args.restorers), pick(t.defenses, args.defenses)


def run(args, attacks, steps: int = 10) -> tuple[float, dict[tuple, float]]:
    restorers, defenses = args.world
    t = parse_config({
        "name": "bench-suite", "threat_models": args.threats, "eot_samples": args.eot,
        "data": {"name": "embedded", "split": args.split, "images": args.images, "size": args.size},
        "restorers": restorers, "defenses": defenses, "attacks": attacks,
        "budgets": [{"eps": f"{e}/255", "steps": steps} for e in args.eps], "samples_per_match": 0,
    })
    with tempfile.TemporaryDirectory() as d:
        db = str(Path(d) / "b.db")
        t0 = time.perf_counter()
        run_tournament(t, db, executor="local", progress=False, registry=load_registry())
        wall = time.perf_counter() - t0
        rows = views.leaderboard(open_reader(db))
    return wall, {(r["threat"], round(r["eps"] * 255), r["restorer"], r["defense"]): r["robust_psnr"] for r in rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="take restorers and defenses from this tournament config")
    p.add_argument("--restorers", nargs="+", help="names (default: unet nafnet, or all of --config's)")
    p.add_argument("--defenses", nargs="+", help="names (default: none jpeg, or all of --config's)")
    p.add_argument("--split", default="val", choices=["val", "test"],
                   help="embedded split (val: held out for choosing settings)")
    p.add_argument("--eps", nargs="+", type=int, default=[4, 8], help="radii in 1/255")
    p.add_argument("--threats", nargs="+", default=["oblivious"])
    p.add_argument("--eot", type=int, default=2)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    args = p.parse_args()
    args.world = world(args)
    base = suite_module.SUITES["standard"]
    t_old, old = run(args, OLD_DEFAULT)
    t_std, std = run(args, ["standard"])
    suite_module.SUITES["standard"] = doubled(base)
    t_dbl, dbl = run(args, ["standard"])
    suite_module.SUITES["standard"] = base
    print(f"{'threat':9s} {'eps':>5s} {'system':24s} {'old default':>12s} {base.label:>12s} {'x2':>8s} {'x2 - std':>9s}")
    for k in sorted(std):
        fmt = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731
        gap = dbl.get(k) - std[k] if dbl.get(k) is not None and std[k] is not None else None
        print(f"{k[0]:9s} {k[1]:>3d}/255 {k[2] + ' + ' + k[3]:24s} {fmt(old.get(k)):>12s} {fmt(std[k]):>12s} "
              f"{fmt(dbl.get(k)):>8s} {fmt(gap):>9s}")
    print(f"wall time: old default {t_old:.1f} s, {base.label} {t_std:.1f} s, x2 {t_dbl:.1f} s "
          f"({t_std / t_old:.2f}x and {t_dbl / t_old:.2f}x the old default)")


if __name__ == "__main__":
    main()
