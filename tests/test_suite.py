"""The standard attack suite: entered by name, fixed and versioned."""

import pytest

from arena.api import ConfigError
from arena.plan import plan
from arena.plugins import load_registry
from arena.run.driver import run_tournament, summarise_plan
from arena.store import queries
from arena.store.db import open_reader
from arena.suite import STANDARD
from helpers import config


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def test_standard_expands_to_its_fixed_attacks_per_restorer(registry):
    t = config(restorers=["identity", "unet"], defenses=["none"], attacks=["fgsm", "standard"])
    matches = plan(t, registry)
    suite = [m for m in matches if m.suite]
    assert {m.suite for m in suite} == {STANDARD.label} == {"standard-2"}
    assert len(suite) == 2 * len(STANDARD.attacks) and len(matches) == len(suite) + 2
    by = {(m.restorer.name, m.attack.name): m for m in suite}
    assert by[("identity", "apgd")].budget.steps == 50  # the suite's iterations, not the config's 3
    assert by[("identity", "square")].budget.queries == 1000
    assert by[("identity", "apgd")].budget.eps == t.budgets[0].eps  # the config's radius
    # transfer crafts on another restorer than the one attacked
    assert by[("identity", "transfer")].attack.params["surrogate"] == "unet"
    assert by[("unet", "transfer")].attack.params["surrogate"] == "nafnet"
    assert "suite standard-2: 8 of them" in summarise_plan(matches)


def test_the_suite_version_is_part_of_the_key(registry, monkeypatch):
    from dataclasses import replace

    import arena.suite as suite_module

    t = config(restorers=["identity"], defenses=["none"], attacks=["standard"])
    before = {m.key for m in plan(t, registry)}
    monkeypatch.setitem(suite_module.SUITES, "standard", replace(STANDARD, version="3"))
    after = plan(t, registry)
    assert {m.suite for m in after} == {"standard-3"}
    assert before.isdisjoint({m.key for m in after})  # a new version reruns everything


def test_a_suite_takes_no_parameters(registry):
    with pytest.raises(ConfigError, match="suite 'standard' takes no parameters"):
        plan(config(attacks=[{"name": "standard", "steps": 5}]), registry)


@pytest.mark.slow
def test_a_tournament_with_the_suite_runs_and_stores_it(tmp_path, registry):
    t = config(restorers=["identity"], defenses=["none"], attacks=["standard"],
               data={"name": "embedded", "split": "test", "images": 2, "size": 16})
    db = str(tmp_path / "s.db")
    report = run_tournament(t, db, executor="local", progress=False, registry=registry)
    assert report.counts["done"] == len(STANDARD.attacks)
    rows = queries.matches(open_reader(db))
    assert {r["suite"] for r in rows} == {"standard-2"}
    assert {r["attack"] for r in rows} == {a.name for a in STANDARD.attacks}
    [board] = queries.leaderboard(open_reader(db))
    assert board["status"] == "ranked" and board["n_attacks"] == len(STANDARD.attacks)


def test_a_random_defense_is_scored_three_ways_with_known_noise(tmp_path, registry):
    """Gaussian noise of known sigma on the identity restorer, attacked by nothing (a
    zero-perturbation floor). The stored single-draw, mean and worst-of-N scores equal what
    the same N draws give when computed by hand, and the leaderboard ranks by the worst."""
    import torch
    from sqlalchemy import select

    from arena.data import load_data
    from arena.match import N_EVALUATIONS, evaluation_seeds, generator
    from arena.metrics import psnr
    from arena.store import models as m
    from arena.threat import System
    from helpers import registry_with

    plugins = registry_with(Nothing)
    t = config(restorers=["identity"], defenses=[{"name": "noise", "sigma": 0.05}], attacks=["nothing"],
               data={"name": "embedded", "split": "test", "images": 2, "size": 32})
    db = str(tmp_path / "n.db")
    run_tournament(t, db, executor="local", progress=False, registry=plugins)
    with open_reader(db).connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(m.scores).order_by(m.scores.c.id))]
    data = load_data("embedded", "test", images=2, size=32, seed=0)
    system = System(plugins.create("restorer", "identity").load("cpu"), [plugins.create("defense", "noise", {"sigma": 0.05})])
    seeds = evaluation_seeds(t.seed, True)
    assert len(seeds) == N_EVALUATIONS == 8
    draws = torch.stack([psnr(system(data.lq.clone(), generator(s)), data.hq) for s in seeds])
    assert [r["adv_psnr"] for r in rows] == pytest.approx(draws[0].tolist(), abs=1e-5)
    assert [r["adv_psnr_mean"] for r in rows] == pytest.approx(draws.mean(0).tolist(), abs=1e-5)
    assert [r["adv_psnr_worst"] for r in rows] == pytest.approx(draws.min(0).values.tolist(), abs=1e-5)
    assert all(r["adv_psnr_worst"] < r["adv_psnr_mean"] for r in rows)  # the draws differ
    [board] = queries.leaderboard(open_reader(db))
    assert board["robust_psnr"] == pytest.approx(float(draws.min(0).values.mean()), abs=1e-5)
    assert board["robust_psnr_mean"] == pytest.approx(float(draws.mean(0).mean()), abs=1e-5)
    assert board["robust_psnr_single"] == pytest.approx(float(draws[0].mean()), abs=1e-5)


from arena.api import Attack  # noqa: E402


class Nothing(Attack):
    """Returns its input: the zero-perturbation floor (a test fixture)."""

    name = "nothing"
    kind = "decision-free"

    def perturb(self, target, lq, hq, budget, generator):
        return lq.clone()


def test_the_convergence_benchmark_takes_a_configs_world_on_held_out_images():
    import argparse
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("bench_suite", root / "benchmarks" / "bench_suite.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = argparse.Namespace(config=str(root / "configs" / "standard.toml"), restorers=["unet"],
                              defenses=["diffpure", "none"])
    restorers, defenses = bench.world(args)
    assert restorers == [{"name": "unet"}]
    assert defenses == [{"name": "none"}, {"name": "diffpure", "sampler": "ddim", "steps": 5, "t_star": 0.1}]
    assert bench.world(argparse.Namespace(config=None, restorers=None, defenses=None)) == (
        ["unet", "nafnet"], ["none", "jpeg"])
