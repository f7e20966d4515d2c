"""Each sanity flag: a case that must raise it and one that must not."""

import pytest
import torch

from arena.api import Attack, Defense
from arena.flags import compute_flags
from arena.run.driver import run_tournament
from arena.store import queries, views, write
from arena.store.db import open_reader, open_writer
from helpers import config, module_with
from arena.plugins import load_registry


def store(tmp_path, rows, tournament="t"):
    """rows: (attack, kind, threat, eps, {image: adv_psnr}, extra); (engine, tournament id)."""
    engine = open_writer(tmp_path / "f.db")
    tid = write.upsert_tournament(engine, config_hash=tournament, name=tournament, config={})
    for i, (attack, kind, threat, eps, scores, extra) in enumerate(rows):
        extra = dict(extra)
        match = {"key": f"{tournament}-k{i}", "restorer": "r", "defense": extra.pop("defense", "none"),
                 "attack": attack, "attack_kind": kind, "threat": threat, "norm": "linf", "eps": eps,
                 "spec": {}, "status": "done", **extra}
        write.write_result(engine, tid, match, [
            {"image": img, "clean_psnr": 30.0, "clean_ssim": 0.9, "adv_psnr": v, "adv_ssim": 0.5}
            for img, v in scores.items()])
    return engine, tid


def names(flags):
    return sorted({f["flag"] for f in flags})


def test_iterative_weaker_than_fgsm(tmp_path):
    bad = store(tmp_path, [("fgsm", "white-box", "oblivious", 0.03, {"a": 20, "b": 20}, {}),
                           ("pgd", "white-box", "oblivious", 0.03, {"a": 22, "b": 22}, {"gradient_calls": 10}),
                           ("rfgsm", "white-box", "oblivious", 0.03, {"a": 22, "b": 22}, {"gradient_calls": 1})])
    flags = compute_flags(*bad)
    assert names(flags) == ["weaker-than-fgsm"]
    assert [f["attack"] for f in flags] == ["pgd"]  # a single-step attack is not held to it


def test_other_objectives_and_minimum_norm_attacks_are_not_held_to_fgsm(tmp_path):
    spec = lambda objective: {"attack": {"params": {"objective": objective}}}  # noqa: E731

    def rows(cw_minimum_norm):  # the attack's trait is stored with its match
        return [("fgsm", "white-box", "oblivious", 0.03, {"a": 20}, {"spec": spec("mse")}),
                ("ssim", "white-box", "oblivious", 0.03, {"a": 25}, {"spec": spec("ssim"), "gradient_calls": 9}),
                ("cw", "white-box", "oblivious", 0.03, {"a": 25},
                 {"spec": spec("mse"), "gradient_calls": 9, "minimum_norm": cw_minimum_norm})]

    assert compute_flags(*store(tmp_path, rows(True), tournament="minimum-norm")) == []
    assert names(compute_flags(*store(tmp_path, rows(False), tournament="plain"))) == ["weaker-than-fgsm"]


def test_iterative_stronger_than_fgsm_is_fine(tmp_path):
    good = store(tmp_path, [("fgsm", "white-box", "oblivious", 0.03, {"a": 22, "b": 22}, {}),
                            ("pgd", "white-box", "oblivious", 0.03, {"a": 20, "b": 20}, {})])
    assert compute_flags(*good) == []


@pytest.mark.parametrize("small, big, flagged", [(20, 22, True), (22, 20, False)])
def test_damage_must_grow_with_eps(tmp_path, small, big, flagged):
    e = store(tmp_path, [("pgd", "white-box", "oblivious", 0.01, {"a": small}, {}),
                         ("pgd", "white-box", "oblivious", 0.03, {"a": big}, {})])
    assert ("damage-not-growing" in names(compute_flags(*e))) == flagged


@pytest.mark.parametrize("noise, flagged", [(18, True), (25, False)])
def test_score_based_or_noise_beating_gradients_per_image(tmp_path, noise, flagged):
    e = store(tmp_path, [("pgd", "white-box", "oblivious", 0.03, {"a": 20, "b": 20}, {}),
                         ("noise", "decision-free", "oblivious", 0.03, {"a": noise, "b": 26}, {})])
    assert ("gradient-attacks-beaten" in names(compute_flags(*e))) == flagged


@pytest.mark.parametrize("grad, flagged", [({"finite": True, "abs_mean": 0.0}, True),
                                           ({"finite": False, "abs_mean": 1.0}, True),
                                           ({"finite": True, "abs_mean": 1e-3}, False)])
def test_zero_or_nonfinite_start_gradient(tmp_path, grad, flagged):
    e = store(tmp_path, [("pgd", "white-box", "oblivious", 0.03, {"a": 20}, {"start_grad": grad})])
    assert ("bad-gradient" in names(compute_flags(*e))) == flagged


@pytest.mark.parametrize("eot, flagged", [(1, True), (4, False)])
def test_random_defense_without_eot(tmp_path, eot, flagged):
    e = store(tmp_path, [("pgd", "white-box", "adaptive", 0.03, {"a": 20},
                          {"defense": "jpeg>noisy", "eot": eot, "eot_used": eot,
                           "probes": {"random_declared": True}})])  # a link of the chain is random
    assert ("no-eot" in names(compute_flags(*e))) == flagged


@pytest.mark.parametrize("adaptive, flagged", [(25, True), (18, False)])
def test_adaptive_better_than_oblivious(tmp_path, adaptive, flagged):
    e = store(tmp_path, [("pgd", "white-box", "oblivious", 0.03, {"a": 20}, {}),
                         ("pgd", "white-box", "adaptive", 0.03, {"a": adaptive}, {})])
    assert ("adaptive-weaker" in names(compute_flags(*e))) == flagged


class Shatter(Defense):
    """Quantises to 8 levels and declares the result differentiable: masked gradients."""

    name = "shatter"
    gradient = "exact"

    def purify(self, x, generator):
        return torch.round(x * 7) / 7  # round's gradient is zero almost everywhere


def test_gradient_masking_defense_is_disqualified_by_the_probe_end_to_end(tmp_path):
    """Rounding declared exact: its gradient is zero, so the worker's probe disqualifies the
    system before any attack could be fooled, and it is never ranked."""
    registry = load_registry(modules=(module_with(Shatter, role="defense"),))
    db = str(tmp_path / "m.db")
    t = config(restorers=["tiny"], defenses=["shatter", "none"], attacks=["pgd"],
               threat_models=["adaptive"])
    run_tournament(t, db, executor="local", progress=False, registry=registry)
    rows = {r["defense"]: r for r in queries.matches(open_reader(db))}
    assert rows["shatter"]["status"] == "disqualified" and rows["shatter"]["blame"] == "system"
    assert "zero gradient" in rows["shatter"]["reason"]
    assert rows["none"]["status"] == "done"
    board = {r["defense"]: r for r in views.leaderboard(open_reader(db))}
    assert board["shatter"]["status"] == "unranked" and board["shatter"]["rank"] is None
    assert board["none"]["rank"] == 1
