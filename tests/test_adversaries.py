"""Entrants are adversaries (EVALUATION.md): real tournaments with cheating plugins
(tests/adversaries.py), asserting what the arena stored for each.

Tournaments are computed once per group (module-scoped fixtures) on two 16 px images and
asserted on by several tests. Rule H: the honest entrants' per-image scores are identical with
and without the cheaters, compared match by match with the honest tournament run alone.

The cheaters include those that reach the arena's private state (the garbage collector,
private attributes): what the arena does about them is detection and repair, as README.md's
"Entrants are adversaries" states.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

import adversaries as adv
from arena.data import load_data
from arena.plan import parse_config, plan
from arena.plugins import load_registry
from arena.run.driver import RunReport, run_tournament
from arena.store import models as m
from arena.store import queries
from arena.store.db import open_reader

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = {"name": "embedded", "split": "test", "images": 2, "size": 16, "seed": 0}
EPS = 8 / 255
STEPS = 2
QUERIES = 20
BUDGET = {"norm": "linf", "eps": "8/255", "steps": STEPS, "queries": QUERIES}
HONEST = {
    "restorers": ["tiny", "identity"],
    "defenses": ["none", {"name": "jpeg", "quality": 50}],
    "attacks": ["fgsm", {"name": "pgd", "restarts": 1}, {"name": "simba", "iterations": 8}],
}
HONEST_ATTACKS = ("fgsm", "pgd", "simba")
METRICS = ("adv_psnr", "adv_ssim", "clean_psnr", "clean_ssim")


def tournament(name: str, **fields: Any):
    raw = {"name": name, "seed": 0, "threat_models": ["oblivious"], "data": DATA,
           "budgets": [BUDGET], "samples_per_match": 0, **fields}
    return parse_config(raw)


@dataclass
class Run:
    db: str
    report: RunReport
    matches: list[dict[str, Any]]  # every match of the tournament
    scores: list[dict[str, Any]]  # per-image scores joined with their match's columns

    def rows(self, **where) -> list[dict[str, Any]]:
        return [r for r in self.matches if all(r[k] == v for k, v in where.items())]

    def one(self, **where) -> dict[str, Any]:
        (row,) = self.rows(**where)
        return row

    def per_image(self, **where) -> dict[str, dict[str, Any]]:
        return {s["image"]: s for s in self.scores if all(s[k] == v for k, v in where.items())}

    def by_match(self) -> dict[tuple, tuple]:
        """(restorer, defense, attack, image) -> the four scores."""
        return {(s["restorer"], s["defense"], s["attack"], s["image"]): tuple(s[k] for k in METRICS)
                for s in self.scores}


def execute(t, db: str, registry) -> Run:
    report = run_tournament(t, db, executor="local", progress=False, registry=registry)
    engine = open_reader(db)
    mt, sc = m.matches, m.scores
    linked = select(m.tournament_matches.c.match_id).where(
        m.tournament_matches.c.tournament_id == report.tournament_id)
    with engine.connect() as conn:
        matches = [dict(r._mapping) for r in conn.execute(
            select(mt).where(mt.c.id.in_(linked)).order_by(mt.c.id))]
        scores = [dict(r._mapping) for r in conn.execute(
            select(sc, mt.c.restorer, mt.c.defense, mt.c.attack, mt.c.status, mt.c.verified)
            .join(mt, sc.c.match_id == mt.c.id).where(mt.c.id.in_(linked)).order_by(sc.c.id))]
    engine.dispose()
    return Run(db, report, matches, scores)


def leaderboard(run: Run) -> list[dict[str, Any]]:
    engine = open_reader(run.db)
    try:
        return queries.leaderboard(engine, run.report.tournament_id)
    finally:
        engine.dispose()


def disqualified(row: dict[str, Any], blame: str, *words: str) -> None:
    assert (row["status"], row["blame"]) == ("disqualified", blame), (row["status"], row["blame"], row["reason"])
    reason = (row["reason"] or "").lower()
    assert all(w.lower() in reason for w in words), row["reason"]


def done_and_verified(row: dict[str, Any]) -> None:
    assert (row["status"], row["verified"]) == ("done", True), (row["status"], row["blame"], row["reason"])


def assert_same_scores(alone: Run, together: Run, restorers=None, defenses=None, attacks=HONEST_ATTACKS) -> int:
    """Rule H: every honest match of ``alone`` has, image by image, exactly the scores (and
    the status) it has in ``together``. Returns how many images were compared."""
    want = {k: v for k, v in alone.by_match().items()
            if (restorers is None or k[0] in restorers) and (defenses is None or k[1] in defenses)
            and k[2] in attacks}
    have = together.by_match()
    assert want
    assert {k: have.get(k) for k in want} == want
    for r in alone.matches:
        if (restorers is None or r["restorer"] in restorers) and (defenses is None or r["defense"] in defenses) \
                and r["attack"] in attacks:
            other = together.one(restorer=r["restorer"], defense=r["defense"], attack=r["attack"])
            assert (other["status"], other["verified"]) == (r["status"], r["verified"]), other["reason"]
    return len(want)


# ------------------------------------------------------------------------------------------
# The tournaments
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry():
    return adv.registry()


@pytest.fixture(scope="module")
def honest(tmp_path_factory, registry, one_thread) -> Run:
    """The honest entrants alone: 2 restorers x 2 defenses x 3 attacks."""
    run = execute(tournament("honest", **HONEST), str(tmp_path_factory.mktemp("honest") / "a.db"), registry)
    assert run.report.counts == {"done": 12}
    assert all(r["status"] == "done" and r["verified"] for r in run.matches)
    return run


@pytest.fixture(scope="module")
def isolation(tmp_path_factory, registry, one_thread) -> Run:
    """The honest entrants with cheaters that damage data and weights (first in every list,
    so they run before the honest matches on the same worker)."""
    t = tournament(
        "isolation", restorers=HONEST["restorers"],
        defenses=["cheat_inplace_defense", "honest_inplace_twin", *HONEST["defenses"]],
        attacks=["cheat_inplace_inputs", "cheat_gc_data", "cheat_private_weights", "cheat_gc_weights",
                 *HONEST["attacks"]])
    return execute(t, str(tmp_path_factory.mktemp("isolation") / "a.db"), registry)


ORACLE_CHEATERS = [
    "cheat_query_rows", "cheat_query_budget", "cheat_query_reset", "cheat_score_forward",
    "cheat_score_loss_grad", "cheat_score_system", "cheat_kind_flip", "cheat_score_private_model",
    "cheat_score_gc_model", "cheat_score_forged", "cheat_white_private_model", "cheat_white_overspend",
    "cheat_white_reset_evaluations", "cheat_catch_violation", "cheat_forget_violation",
    "cheat_transfer_many", "cheat_return_over_budget", "cheat_return_nan", "cheat_return_wrong_shape",
    "cheat_return_int", "cheat_return_liar", "cheat_many_rounds", "cheat_raises",
    "cheat_raises_in_rounds", "cheat_raises_in_init", "cheat_raises_system_fault",
    "cheat_float64_query", "cheat_detached_steer",
]


@pytest.fixture(scope="module")
def oracle(tmp_path_factory, registry, one_thread) -> Run:
    """Attacks that cheat their oracle, on one honest system (tiny, none), then fgsm; the hook
    remover goes last because it blinds the arena's watch for the rest of the worker's life."""
    t = tournament("oracle", restorers=["tiny"], defenses=["none"],
                   attacks=[*ORACLE_CHEATERS, "fgsm", "cheat_hook_remover"])
    return execute(t, str(tmp_path_factory.mktemp("oracle") / "a.db"), registry)


EOT = 2
DEFENSE_CHEATERS = [
    "cheat_stateful_class", "cheat_stateful_instance", "cheat_bad_backward", "cheat_nan_gradient",
    "cheat_rounding", "cheat_undeclared_random", "cheat_global_rng", "cheat_global_rng_declared",
    "cheat_fragile",
]


@pytest.fixture(scope="module")
def defenses(tmp_path_factory, registry, one_thread) -> Run:
    """Defenses that misdeclare or keep state, plus an honest random one and none; adaptive."""
    t = tournament("defenses", threat_models=["adaptive"], eot_samples=EOT, restorers=["tiny"],
                   defenses=[*DEFENSE_CHEATERS, "honest_noise", "none"], attacks=["fgsm", "cheat_catch_fault"])
    return execute(t, str(tmp_path_factory.mktemp("defenses") / "a.db"), registry)


@pytest.fixture(scope="module")
def backups(tmp_path_factory, registry, one_thread) -> Run:
    t = tournament("backups", restorers=["tiny"], defenses=["none"], attacks=["cheat_gc_backups", "fgsm"])
    return execute(t, str(tmp_path_factory.mktemp("backups") / "a.db"), registry)


@pytest.fixture(scope="module")
def sabotage(tmp_path_factory, registry, one_thread) -> Run:
    """Each cheater singles out one system: the hook the tiny model, the swap the identity
    system, the clean-cache forger the honest_victim system."""
    t = tournament("sabotage", restorers=["tiny", "identity", "honest_victim"], defenses=["none"],
                   attacks=["cheat_hook_model", "cheat_swap_model", "cheat_gc_clean_cache", "fgsm"])
    return execute(t, str(tmp_path_factory.mktemp("sabotage") / "a.db"), registry)


# ------------------------------------------------------------------------------------------
# Rule H and data isolation (cases 1, 2, 3, 18)
# ------------------------------------------------------------------------------------------


def test_honest_scores_are_identical_with_the_data_cheaters(honest, isolation):
    compared = assert_same_scores(honest, isolation)
    assert compared == 12 * DATA["images"]


def test_1_writing_into_its_own_inputs_damages_only_its_copy(isolation):
    data = load_data(DATA["name"], DATA["split"], images=DATA["images"], size=DATA["size"], seed=DATA["seed"])
    linf = (adv.shifted(data.lq, EPS) - data.lq).flatten(1).abs().amax(1)  # what it returned, vs pristine lq
    rows = isolation.rows(attack="cheat_inplace_inputs")
    assert len(rows) == 8
    for r in rows:
        done_and_verified(r)
        images = isolation.per_image(restorer=r["restorer"], defense=r["defense"], attack=r["attack"])
        assert [images[i]["linf"] for i in data.ids] == linf.tolist()


def test_2_writing_into_the_arenas_data_through_gc_is_disqualified(isolation):
    rows = isolation.rows(attack="cheat_gc_data")
    assert len(rows) == 8
    for r in rows:
        disqualified(r, "attack", "modified")


@pytest.mark.parametrize("cheater", ["cheat_private_weights", "cheat_gc_weights"])
def test_3_changing_the_restorers_weights_is_disqualified(isolation, cheater):
    rows = isolation.rows(attack=cheater, restorer="tiny")  # identity has no weights to change
    assert len(rows) == 4
    for r in rows:
        disqualified(r, "attack", "weights")


def test_18_a_defense_writing_into_its_input_harms_no_one(isolation):
    for attack in ("fgsm", "pgd"):
        for restorer in HONEST["restorers"]:
            cheat = isolation.one(restorer=restorer, defense="cheat_inplace_defense", attack=attack)
            twin = isolation.one(restorer=restorer, defense="honest_inplace_twin", attack=attack)
            done_and_verified(cheat)
            done_and_verified(twin)
            mine = isolation.per_image(restorer=restorer, defense="cheat_inplace_defense", attack=attack)
            theirs = isolation.per_image(restorer=restorer, defense="honest_inplace_twin", attack=attack)
            assert {i: [s[k] for k in METRICS] for i, s in mine.items()} == \
                   {i: [s[k] for k in METRICS] for i, s in theirs.items()}


def test_18_a_defense_writing_into_its_input_does_not_sabotage_score_based_attacks(isolation):
    for restorer in HONEST["restorers"]:
        cheat = isolation.one(restorer=restorer, defense="cheat_inplace_defense", attack="simba")
        twin = isolation.one(restorer=restorer, defense="honest_inplace_twin", attack="simba")
        done_and_verified(twin)
        assert (cheat["status"], cheat["blame"]) == (twin["status"], twin["blame"]), cheat["reason"]
        mine = isolation.per_image(restorer=restorer, defense="cheat_inplace_defense", attack="simba")
        theirs = isolation.per_image(restorer=restorer, defense="honest_inplace_twin", attack="simba")
        assert {i: [s[k] for k in METRICS] for i, s in mine.items()} == \
               {i: [s[k] for k in METRICS] for i, s in theirs.items()}


def test_2_corrupting_the_workers_backup_copy_harms_no_one(honest, backups):
    disqualified(backups.one(attack="cheat_gc_backups"), "attack", "modified")
    assert_same_scores(honest, backups, restorers=["tiny"], defenses=["none"], attacks=["fgsm"])


def test_3_hooking_the_restorer_is_disqualified_and_harms_no_one(honest, sabotage):
    disqualified(sabotage.one(attack="cheat_hook_model", restorer="tiny"), "attack")
    done_and_verified(sabotage.one(attack="fgsm", restorer="tiny"))
    assert_same_scores(honest, sabotage, restorers=["tiny"], defenses=["none"], attacks=["fgsm"])


def test_3_swapping_the_attacked_systems_model_changes_no_score(honest, sabotage):
    """The score comes from a system rebuilt after the attack, so swapping the attacked
    instance's model changes nothing: the cheater's unperturbed batch scores as clean."""
    done_and_verified(sabotage.one(attack="cheat_swap_model", restorer="identity"))
    for s in sabotage.per_image(attack="cheat_swap_model", restorer="identity").values():
        assert s["adv_psnr"] == s["clean_psnr"]
    done_and_verified(sabotage.one(attack="fgsm", restorer="identity"))
    assert_same_scores(honest, sabotage, restorers=["identity"], defenses=["none"], attacks=["fgsm"])


def test_2_forging_the_cached_clean_scores_is_disqualified_and_harms_no_one(sabotage):
    disqualified(sabotage.one(attack="cheat_gc_clean_cache", restorer="honest_victim"), "attack")
    done_and_verified(sabotage.one(attack="fgsm", restorer="honest_victim"))


# ------------------------------------------------------------------------------------------
# The oracle (cases 4-11)
# ------------------------------------------------------------------------------------------


def test_4_eight_rows_per_image_without_index_is_disqualified(oracle):
    disqualified(oracle.one(attack="cheat_query_rows"), "attack", "index", "rows")


def test_4_queries_past_the_budget_are_disqualified(oracle):
    disqualified(oracle.one(attack="cheat_query_budget"), "attack", "queries")


def test_4_resetting_the_query_counter_is_disqualified(oracle):
    disqualified(oracle.one(attack="cheat_query_reset"), "attack", "queries")


@pytest.mark.parametrize("cheater", ["cheat_score_forward", "cheat_score_loss_grad", "cheat_score_system"])
def test_5_a_score_based_attack_using_white_box_members_is_disqualified(oracle, cheater):
    disqualified(oracle.one(attack=cheater), "attack", "score-based")


def test_5_a_kind_changed_on_the_instance_is_disqualified(oracle):
    row = oracle.one(attack="cheat_kind_flip")
    assert row["attack_kind"] == "score-based"
    disqualified(row, "attack")


@pytest.mark.parametrize("cheater", ["cheat_score_private_model", "cheat_score_gc_model"])
def test_6_a_score_based_attack_running_the_model_itself_is_disqualified(oracle, cheater):
    disqualified(oracle.one(attack=cheater), "attack", "neural network outside its target")


def test_6_a_white_box_attack_running_the_model_around_its_target_is_disqualified(oracle):
    disqualified(oracle.one(attack="cheat_white_private_model"), "attack", "outside its target")


def test_6_forging_the_oracles_bookkeeping_is_disqualified(oracle):
    disqualified(oracle.one(attack="cheat_score_forged"), "attack", "outside its target")


def test_6_removing_the_arenas_hooks_is_disqualified(oracle):
    disqualified(oracle.one(attack="cheat_hook_remover"), "attack")


def test_7_ten_times_the_gradient_calls_are_disqualified(oracle):
    disqualified(oracle.one(attack="cheat_white_overspend"), "attack", "evaluations")


def test_7_resetting_the_evaluation_counter_is_disqualified(oracle):
    disqualified(oracle.one(attack="cheat_white_reset_evaluations"), "attack", "bound")


def test_8_a_caught_rule_violation_still_disqualifies(oracle):
    disqualified(oracle.one(attack="cheat_catch_violation"), "attack", "evaluations")


def test_8_erasing_the_oracles_memory_of_a_violation_still_disqualifies(oracle):
    disqualified(oracle.one(attack="cheat_forget_violation"), "attack", "evaluations")


def test_8_a_caught_system_fault_still_fails_the_match(defenses):
    row = defenses.one(attack="cheat_catch_fault", defense="cheat_fragile")
    assert (row["status"], row["blame"]) == ("failed", "system"), row["reason"]
    assert "fragile defense met a grey image" in row["reason"]
    # against a system that does not fault, the same attack is simply done
    done_and_verified(defenses.one(attack="cheat_catch_fault", defense="none"))


def test_transfer_attack_asking_for_many_surrogates_is_bounded(oracle):
    row = oracle.one(attack="cheat_transfer_many")
    assert row["evaluations"] <= row["evaluation_limit"]  # the surrogates share one bound
    disqualified(row, "attack", "evaluations")


@pytest.mark.parametrize("cheater, words", [
    ("cheat_return_over_budget", ("exceeds eps",)),
    ("cheat_return_nan", ("non-finite",)),
    ("cheat_return_wrong_shape", ("shape",)),
    ("cheat_return_int", ("torch.int64", "expected torch.float32")),
])
def test_9_an_invalid_result_is_disqualified(oracle, cheater, words):
    row = oracle.one(attack=cheater)
    disqualified(row, "attack", *words)
    assert not oracle.per_image(attack=cheater)  # never scored


def test_9_a_tensor_subclass_cannot_lie_to_the_norm_check(oracle):
    row = oracle.one(attack="cheat_return_liar")
    linf = [s["linf"] for s in oracle.per_image(attack="cheat_return_liar").values()]
    assert not linf or max(linf) <= EPS * (1 + 1e-5)
    disqualified(row, "attack", "not a plain torch.Tensor")


def test_10_declared_rounds_are_capped(oracle):
    from arena.api import MAX_ROUNDS

    row = oracle.one(attack="cheat_many_rounds")
    done_and_verified(row)
    assert row["evaluation_limit"] == DATA["images"] * (STEPS + 2) * MAX_ROUNDS * 1
    assert row["evaluations"] == DATA["images"]


def test_11_an_attack_that_raises_fails_alone(oracle):
    row = oracle.one(attack="cheat_raises")
    assert (row["status"], row["blame"]) == ("failed", "attack")
    assert "plugin bug" in row["error"]
    done_and_verified(oracle.one(attack="fgsm"))  # the tournament went on
    assert len(oracle.matches) == len(ORACLE_CHEATERS) + 2 == oracle.report.planned


@pytest.mark.parametrize("cheater", [
    "cheat_raises_in_rounds",
    "cheat_raises_in_init",
])
def test_11_an_attack_that_raises_outside_perturb_fails_alone(oracle, cheater):
    row = oracle.one(attack=cheater)
    assert (row["status"], row["blame"]) == ("failed", "attack"), (row["blame"], row["reason"])


@pytest.mark.parametrize("cheater", [
    "cheat_raises_system_fault",
    "cheat_float64_query",
    "cheat_detached_steer",
])
def test_an_attack_cannot_get_an_honest_system_blamed(oracle, cheater):
    row = oracle.one(attack=cheater)
    assert row["status"] in ("failed", "disqualified")
    assert row["blame"] == "attack", (row["status"], row["blame"], row["reason"])


# ------------------------------------------------------------------------------------------
# Defenses and restorers (cases 12-19)
# ------------------------------------------------------------------------------------------


def test_12_class_level_memory_is_disqualified_as_stateful_and_never_ranked(defenses):
    rows = defenses.rows(defense="cheat_stateful_class")
    assert len(rows) == 2
    for r in rows:
        disqualified(r, "system", "stateful")
    board = [r for r in leaderboard(defenses) if r["defense"] == "cheat_stateful_class"]
    assert len(board) == 1
    if "status" in board[0]:
        assert board[0]["status"] != "ranked"
    else:  # leaderboard status not implemented yet: at least it has no robust score
        assert board[0]["robust_psnr"] is None


def test_13_instance_memory_is_disqualified(defenses):
    for r in defenses.rows(defense="cheat_stateful_instance"):
        disqualified(r, "system", "stateful")
    assert len(defenses.rows(defense="cheat_stateful_instance")) == 2


def test_14_a_raising_backward_is_disqualified_by_the_probe(defenses):
    for r in defenses.rows(defense="cheat_bad_backward"):
        disqualified(r, "system", "probe", "gradient", "raised")
        assert r["probes"]["violation"] == r["reason"]


@pytest.mark.parametrize("defense", ["cheat_nan_gradient", "cheat_rounding"])
def test_15_a_useless_declared_gradient_is_disqualified(defenses, defense):
    rows = defenses.rows(defense=defense)
    assert len(rows) == 2
    for r in rows:
        disqualified(r, "system", "probe", "gradient")


@pytest.mark.parametrize("defense, words", [
    ("cheat_undeclared_random", ("random",)),
    ("cheat_global_rng", ("outside its generator",)),
    ("cheat_global_rng_declared", ("outside its generator",)),
])
def test_16_undeclared_or_ungenerated_randomness_is_disqualified(defenses, defense, words):
    rows = defenses.rows(defense=defense)
    assert len(rows) == 2
    for r in rows:
        disqualified(r, "system", "probe", *words)


def test_17_an_honest_random_defense_is_verified_with_eot(defenses):
    for defense, eot in (("honest_noise", EOT), ("none", 1)):
        rows = defenses.rows(defense=defense)
        assert len(rows) == 2
        for r in rows:
            assert r["threat"] == "adaptive"
            done_and_verified(r)
            assert r["eot_used"] == eot
            assert r["warm_gap_db"] <= 0.01
    assert defenses.one(defense="honest_noise", attack="fgsm")["evaluations"] == DATA["images"] * EOT


def test_19_a_restorer_returning_nan_fails_its_matches(tmp_path_factory, registry, one_thread):
    t = tournament("nan", restorers=["cheat_nan_restorer"], defenses=["none"], attacks=["fgsm"])
    run = execute(t, str(tmp_path_factory.mktemp("nan") / "a.db"), registry)
    row = run.one(restorer="cheat_nan_restorer")
    assert (row["status"], row["blame"]) == ("failed", "system"), row["reason"]
    assert "non-finite" in row["reason"]


# ------------------------------------------------------------------------------------------
# Results follow code (case 20)
# ------------------------------------------------------------------------------------------

EVOLVING = '''
"""An attack whose code changes between runs (test fixture), version {version}."""

import torch

from arena.api import Attack
from arena.hookspecs import hookimpl


class Evolving(Attack):
    """Shifts the input by {what} (test fixture)."""

    name = "cheat_evolving"

    def perturb(self, target, lq, hq, budget, generator):
        return {body}


@hookimpl
def register_attacks(register):
    register(Evolving)
'''


def test_20_results_follow_code(tmp_path, monkeypatch, one_thread):
    name = "adv_evolving_plugin"
    path = tmp_path / f"{name}.py"
    # v1 damages (eps/2 per pixel), v2 does nothing: a leaderboard that kept v1 would be lower
    path.write_text(EVOLVING.format(version=1, what="eps/2", body="torch.where(lq > 0.5, lq - budget.eps / 2, "
                                                                  "lq + budget.eps / 2)"))
    monkeypatch.syspath_prepend(str(tmp_path))  # the re-scoring process imports it too
    monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module(name)
    t = tournament("evolving", restorers=["identity"], defenses=["none"], attacks=["cheat_evolving"])
    db = str(tmp_path / "a.db")

    first = execute(t, db, load_registry(modules=(module,)))
    assert first.report.counts == {"done": 1}
    again = execute(t, db, load_registry(modules=(module,)))
    assert again.report.counts == {} and again.report.resumed == 1  # unchanged code: nothing reruns
    (old,) = first.matches
    assert [r["id"] for r in again.matches] == [old["id"]]

    path.write_text(EVOLVING.format(version=2, what="nothing at all", body="lq.clone()"))
    importlib.invalidate_caches()
    module = importlib.reload(module)
    registry = load_registry(modules=(module,))
    changed = execute(t, db, registry)
    assert changed.report.counts == {"done": 1} and changed.report.resumed == 0
    (new,) = changed.matches
    assert new["id"] != old["id"] and new["key"] == plan(t, registry)[0].key
    done_and_verified(new)
    assert new["versions"]["attack:cheat_evolving"] != old["versions"]["attack:cheat_evolving"]

    (row,) = leaderboard(changed)
    scores = changed.per_image(attack="cheat_evolving")
    assert row["robust_psnr"] == pytest.approx(sum(s["adv_psnr"] for s in scores.values()) / len(scores))
    assert row["robust_psnr"] == pytest.approx(row["clean_psnr"])  # v2's zero perturbation, not v1's
    old_scores = first.per_image(attack="cheat_evolving")
    assert row["robust_psnr"] > sum(s["adv_psnr"] for s in old_scores.values()) / len(old_scores) + 0.1
    engine = open_reader(db)
    try:
        assert len(queries.matches(engine)) == 2  # the old row is kept, out of the tournament
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------
# Another function under gradients (case 21)
# ------------------------------------------------------------------------------------------


def sniffers_tournament():
    return tournament("sniffers", threat_models=["oblivious", "adaptive"],
                      restorers=["tiny", "cheat_grad_sniffer_restorer"], defenses=["none", "cheat_grad_sniffer"],
                      attacks=["fgsm", {"name": "pgd", "restarts": 1}])


@pytest.fixture(scope="module")
def sniffers(tmp_path_factory, registry, one_thread) -> Run:
    """A defense and a restorer that compute something else when an attack differentiates them."""
    return execute(sniffers_tournament(), str(tmp_path_factory.mktemp("sniffers") / "a.db"), registry)


def test_21_a_system_that_changes_under_gradients_is_disqualified(sniffers, tmp_path, monkeypatch, registry):
    for r in sniffers.rows(restorer="cheat_grad_sniffer_restorer"):  # every white-box attack differentiates it
        disqualified(r, "system", "another function under gradients")
    for r in sniffers.rows(restorer="tiny", defense="cheat_grad_sniffer"):
        if r["threat"] == "adaptive":  # the attack differentiates the defense
            disqualified(r, "system", "another function under gradients")
        else:  # oblivious: only the honest restorer is differentiated, and the defense is the identity
            done_and_verified(r)
    for r in sniffers.rows(restorer="tiny", defense="none"):
        done_and_verified(r)
    # what the check prevents: without it, both cheaters score far above the honest tiny system
    # (which they equal when they are not differentiated)
    import arena.match

    monkeypatch.setattr(arena.match, "replay_problem", lambda ledger: None)
    blind = execute(sniffers_tournament(), str(tmp_path / "blind.db"), registry)
    score = {(b["restorer"], b["defense"], b["threat"]): b["robust_psnr"] for b in leaderboard(blind)}
    honest = score[("tiny", "none", "adaptive")]
    assert score[("tiny", "cheat_grad_sniffer", "adaptive")] > honest + 1, score
    assert score[("cheat_grad_sniffer_restorer", "none", "oblivious")] > score[("tiny", "none", "oblivious")] + 1, score


def test_21_which_evaluations_are_replayed_is_a_uniform_sample_after_the_first():
    from collections import Counter

    from arena.threat import REPLAYS, Ledger

    calls, kept = 50, Counter()
    for _ in range(2000):
        ledger = Ledger()
        for i in range(calls):
            slot = ledger.replay_slot()
            if slot is not None:
                ledger.keep(slot, (i,))
        chosen = [e[0] for e in ledger.replays]
        assert len(chosen) == len(set(chosen)) == REPLAYS and chosen[0] == 0  # the first, always
        kept.update(chosen[1:])
    expected = 2000 * (REPLAYS - 1) / (calls - 1)  # every later call equally likely (about 122)
    assert set(kept) == set(range(1, calls))
    assert all(0.5 * expected < kept[i] < 1.6 * expected for i in range(1, calls)), kept
