"""The standard evaluation (issue 15): APGD's schedule, the EOT count rule, the three scores of a
random defense, escalation of masked gradients, convergence."""

from __future__ import annotations

import math

import pytest
import torch

from arena.threat import Budget

# --------------------------------------------------------------------------------------------
# APGD: the step-size schedule of Croce & Hein (ICML 2020), Sec. 3.2
# --------------------------------------------------------------------------------------------


def paper_checkpoints(n: int) -> list[int]:
    """The rule as the paper writes it, in floating point with a guard for 0.22 * 100."""
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt > 1 + 1e-9:
            break
        p.append(nxt)
    out = []
    for pj in p[1:]:
        w = math.ceil(pj * n - 1e-9)
        if 0 < w < n and (not out or w > out[-1]):
            out.append(w)
    return out


@pytest.mark.parametrize("n", [10, 37, 50, 100, 200, 1000])
def test_apgd_checkpoints_are_the_papers(n):
    from arena_plugins.attacks.apgd import checkpoints

    assert checkpoints(n) == paper_checkpoints(n)


def test_apgd_checkpoints_for_100_iterations():
    from arena_plugins.attacks.apgd import checkpoints

    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


class ScriptedLoss:
    """A target whose loss is a fixed script (one value per gradient call) and whose gradient
    is all ones: the schedule then depends on nothing but the rule."""

    def __init__(self, losses):
        self.losses = list(losses)
        self.calls = 0

    def loss_grad(self, x, hq=None):
        value = self.losses[min(self.calls, len(self.losses) - 1)]
        self.calls += 1
        return torch.full((x.shape[0],), float(value)), torch.ones_like(x)


def run_apgd(losses, n, **params):
    from arena_plugins.attacks.apgd import APGD

    attack = APGD(APGD.validate(params))
    x = torch.full((1, 1, 4, 4), 0.5)
    budget = Budget(eps=8 / 255, steps=n)
    attack.climb(ScriptedLoss(losses), x.clone(), x, x, budget)
    return [s[0] for s in attack.step_sizes]  # step size at iterations 1 .. n-1


def halvings(sizes):
    """Iterations after which the step was halved."""
    return [k for k in range(1, len(sizes)) if sizes[k] < sizes[k - 1]]


def test_apgd_never_halves_while_the_loss_rises():
    sizes = run_apgd(range(100), 100)
    assert sizes == [pytest.approx(2 * 8 / 255)] * 99


def test_apgd_halves_at_every_checkpoint_while_the_loss_stalls():
    from arena_plugins.attacks.apgd import checkpoints

    sizes = run_apgd([1.0] * 100, 100)
    assert halvings(sizes) == checkpoints(100)[:-1]  # the last checkpoint has no step after it
    assert sizes[-1] == pytest.approx(2 * 8 / 255 / 2 ** (len(checkpoints(100)) - 1))


def test_apgd_second_condition_alternates_without_progress():
    # The loss rises at every step (condition 1 is false) but never reaches the start's 10, so
    # the best never improves: condition 2 halves at a checkpoint only if the previous one did
    # not halve. Checkpoints 22, 41, 57, 70, 80, 87, 93 (99 has no step after it).
    script = [10.0] + [1.0 + 1e-4 * k for k in range(200)]
    assert halvings(run_apgd(script, 100)) == [22, 57, 80, 93]


def test_apgd_first_condition_is_strict():
    # rho = 0.5 and the loss rises in exactly half of the 22 steps before w_1 (up 2 on odd
    # steps, down 1 on even ones, so the best keeps improving and condition 2 is false). The
    # paper halves only when fewer than rho * period steps rose: 11 < 11 is false, no halving.
    script, v = [0.0], 0.0
    for k in range(1, 200):
        v += 2.0 if k % 2 else -1.0
        script.append(v)
    assert 22 not in halvings(run_apgd(script, 100, rho=0.5))
    # one rise fewer in the period (steps 21 and 22 both fall) and it halves
    script[21], script[22] = script[20] - 1.0, script[20] - 2.0
    assert 22 in halvings(run_apgd(script, 100, rho=0.5))


# --------------------------------------------------------------------------------------------
# The EOT count rule
# --------------------------------------------------------------------------------------------


def predicted_count(r: float, counts=(1, 2, 4, 8, 16, 32), reference=64, threshold=0.9):
    """For gradients g + noise with |noise|^2 / |g|^2 = r per draw (high dimension), the
    cosine of a k-draw mean to a reference-draw mean is 1 / sqrt((1 + r/k)(1 + r/reference))."""
    for k in counts:
        if 1 / math.sqrt((1 + r / k) * (1 + r / reference)) >= threshold:
            return k
    return None


@pytest.mark.parametrize("r", [0.0, 0.1, 0.6, 2.0])  # counts 1, 1, 4, 16, each with a margin
def test_eot_count_follows_the_cosine_rule(r):
    from arena.suite import eot_count

    d, images = 20_000, 3
    g = torch.randn(images, d, generator=torch.Generator().manual_seed(0))
    g = g / g.norm(dim=1, keepdim=True)
    scale = math.sqrt(r / d)  # noise of squared norm r (relative to |g|^2 = 1) per draw

    def draw(k):
        return g + scale * torch.randn(images, d, generator=torch.Generator().manual_seed(100 + k))

    got = eot_count(draw)
    assert got["reached"] and got["count"] == predicted_count(r)
    assert got["cosine"] >= 0.9


def test_eot_count_caps_at_its_largest_count_and_says_so():
    from arena.suite import EOT_COUNTS, eot_count

    g = torch.zeros(2, 5000)
    got = eot_count(lambda k: g + torch.randn(2, 5000, generator=torch.Generator().manual_seed(k)))
    assert got == {**got, "count": EOT_COUNTS[-1], "reached": False}
    assert got["cosine"] < 0.9


def test_eot_count_of_a_deterministic_gradient_is_one():
    from arena.suite import eot_count

    g = torch.randn(2, 100)
    assert eot_count(lambda k: g)["count"] == 1
    assert eot_count(lambda k: torch.zeros(2, 100))["count"] == 1  # nothing to estimate


# --------------------------------------------------------------------------------------------
# Convergence
# --------------------------------------------------------------------------------------------


def test_last_quarter_move_is_the_best_losss_rise_in_db():
    from arena.match import last_quarter_move_db

    assert last_quarter_move_db([1.0] * 40) == 0.0
    trace = [0.01 * (1 + k / 40) for k in range(40)]  # best rises from 0.01*(1+29/40) to 0.01*(1+39/40)
    assert last_quarter_move_db(trace) == pytest.approx(10 * math.log10((1 + 39 / 40) / (1 + 29 / 40)))
    assert last_quarter_move_db([3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]) == 0.0  # the best, not the last
    assert last_quarter_move_db([1.0] * 7) is None  # too short to say


# --------------------------------------------------------------------------------------------
# Fixed randomness, escalation: through evaluate and through a tournament
# --------------------------------------------------------------------------------------------

from arena.api import Defense  # noqa: E402
from adversaries import Rounding  # noqa: E402


class RoundExact(Rounding):
    """8-bit rounding declared 'exact' (the cheater of tests/adversaries.py): its gradient is
    zero everywhere, a masking fixture."""

    name = "round_exact"


def _registry_with_round():
    from helpers import registry_with

    return registry_with(RoundExact, role="defense")


def _match(registry, defense: str, suite: str | None, *, attack="apgd", steps=10, frozen=False, params=None):
    from arena.plan import DataSpec, Match, Spec

    d = registry.get("defense", defense).cls.validate(params or {}).model_dump(mode="json")
    a = registry.get("attack", attack).cls.validate({}).model_dump(mode="json")
    return Match(restorer=Spec(name="identity"), defense=(Spec(name=defense, params=d),),
                 attack=Spec(name=attack, params=a), attack_kind="white-box",
                 budget=Budget(eps=8 / 255, steps=steps), threat="adaptive", eot=0 if suite else 1,
                 data=DataSpec(images=2, size=16), seed=0, suite=suite, frozen=frozen)


def _evaluate(registry, match, data):
    from arena.match import clean_pass, evaluate
    from arena.threat import System

    model = registry.create("restorer", "identity").load("cpu")
    build = lambda: System(model, [registry.create("defense", s.name, s.params) for s in match.defense])  # noqa: E731
    system = build()
    clean = clean_pass(system, data.lq, data.hq, match.seed)
    attack = registry.create("attack", match.attack.name, match.attack.params)
    return evaluate(match, system, attack, data, clean, rebuild=build), clean


@pytest.fixture(scope="module")
def small_data():
    from arena.data import load_data

    return load_data("embedded", "test", images=2, size=16, seed=0)


def mean_adv(outcome):
    return sum(s["adv_psnr"] for s in outcome.scores) / len(outcome.scores)


def test_escalation_turns_a_masking_defense_into_no_defense(small_data):
    registry = _registry_with_round()
    none, _ = _evaluate(registry, _match(registry, "none", "standard-2"), small_data)
    masked, clean = _evaluate(registry, _match(registry, "round_exact", None), small_data)
    escalated, _ = _evaluate(registry, _match(registry, "round_exact", "standard-2"), small_data)
    assert none.status == masked.status == escalated.status == "done"
    # declared exact, its zero gradient leaves the attack where it started: it looks robust
    assert masked.protocol["escalated"] is None
    assert mean_adv(masked) == pytest.approx(float(clean.psnr.mean()), abs=0.05)
    assert mean_adv(none) < float(clean.psnr.mean()) - 3  # the attack does work
    # the suite reruns it through BPDA: within 0.3 dB of no defense
    assert "start gradient zero" in escalated.protocol["escalated"]
    assert abs(mean_adv(escalated) - mean_adv(none)) < 0.3


def test_frozen_randomness_attacks_and_scores_one_draw(small_data):
    from arena.match import draw_scores, generator
    from arena.threat import System

    registry = _registry_with_round()
    match = _match(registry, "noise", "standard-2", frozen=True)
    out, _ = _evaluate(registry, match, small_data)
    assert out.status == "done" and out.eot_used == 1 and "eot_rule" not in out.protocol
    drawn, _ = _evaluate(registry, _match(registry, "noise", "standard-2"), small_data)
    rule = drawn.protocol["eot_rule"]
    assert drawn.eot_used == rule["count"] and rule["reference"] == 64
    # the frozen match's score is its adversarial batch under the draw it was attacked with
    system = System(registry.create("restorer", "identity").load("cpu"), [registry.create("defense", "noise")])
    x = torch.from_numpy(out.adv)
    _, again = draw_scores(system, x, small_data.hq, match.seed, False)
    assert [s["adv_psnr"] for s in out.scores] == pytest.approx(again["psnr"], abs=1e-5)
    # knowing the noise exactly, the frozen attack does at least as much damage under that draw
    # as the EOT attack's batch does under it
    _, eot_under_draw = draw_scores(system, torch.from_numpy(drawn.adv), small_data.hq, match.seed, False)
    assert sum(again["psnr"]) <= sum(eot_under_draw["psnr"]) + 0.05


def test_a_suite_tournament_runs_the_protocol(tmp_path, monkeypatch):
    """A small suite of one APGD (10 steps) on identity x {noise, masked rounding}: the worker
    measures the EOT count, plans the frozen variant, escalates instead of disqualifying, stores
    convergence; the leaderboard ranks by the per-image lower of worst-of-N and fixed."""
    from sqlalchemy import select

    import arena.suite as suite_module
    from arena.run.driver import run_tournament
    from arena.store import models as m
    from arena.store import queries
    from arena.store.db import open_reader
    from helpers import config

    monkeypatch.setitem(suite_module.SUITES, "mini", suite_module.Suite(
        "mini", "1", (suite_module.SuiteAttack("apgd", {"restarts": 1}, steps=10, frozen=True),)))
    registry = _registry_with_round()
    t = config(restorers=["identity"], defenses=[{"name": "noise", "sigma": 0.05}, "round_exact"],
               attacks=["mini"], threat_models=["adaptive"],
               data={"name": "embedded", "split": "test", "images": 2, "size": 16})
    db = str(tmp_path / "p.db")
    report = run_tournament(t, db, executor="local", progress=False, registry=registry)
    assert report.counts["done"] == 3  # noise: drawn + frozen; rounding (deterministic): one
    engine = open_reader(db)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(m.matches))]
        scores = [dict(r._mapping) for r in conn.execute(select(m.scores))]
    by = {(r["defense"], bool(r["frozen"])): r for r in rows}
    assert set(by) == {("noise", False), ("noise", True), ("round_exact", False)}
    assert by[("noise", False)]["eot_used"] == by[("noise", False)]["protocol"]["eot_rule"]["count"]
    assert by[("noise", True)]["eot_used"] == 1
    assert by[("round_exact", False)]["status"] == "done"  # escalated, not disqualified
    assert "probe: zero gradient" in by[("round_exact", False)]["escalated"]
    assert all(r["converged"] is not None and r["moved_db"] is not None for r in rows)
    board = {r["defense"]: r for r in queries.leaderboard(engine)}
    assert board["round_exact"]["escalated"] == 1
    assert "no-eot" not in board["noise"]["flags"]  # the frozen match fixes its draw on purpose
    noise = board["noise"]
    per_image = {}
    for s in scores:
        frozen = next(r for r in rows if r["id"] == s["match_id"])["frozen"]
        if next(r for r in rows if r["id"] == s["match_id"])["defense"] != "noise":
            continue
        per_image.setdefault(s["image"], []).append(s["adv_psnr"] if frozen else s["adv_psnr_worst"])
    expected = sum(min(v) for v in per_image.values()) / len(per_image)
    assert noise["robust_psnr"] == pytest.approx(expected, abs=1e-6)
    assert noise["robust_psnr_fixed"] is not None and noise["robust_psnr_worst"] is not None
    assert noise["robust_psnr"] <= min(noise["robust_psnr_fixed"], noise["robust_psnr_worst"]) + 1e-9
    assert noise["robust_psnr_mean"] >= noise["robust_psnr_worst"]
    # the convergence figure: one curve per APGD match, one point per gradient call, never rising
    from arena.store import views

    curves = views.convergence_curves(engine, norm="linf")
    by_attack: dict = {}
    for c in curves:
        by_attack.setdefault((c["system"], c["attack"]), []).append(c["robust_psnr"])
    assert set(by_attack) == {("identity + noise", "apgd"), ("identity + noise", "apgd (frozen)"),
                              ("identity + round_exact", "apgd (escalated)")}
    for (system, attack), ys in by_attack.items():
        row = next(r for r in rows if f"identity + {r['defense']}" == system and bool(r["frozen"]) == ("frozen" in attack))
        assert len(ys) == row["gradient_calls"] == 10
        assert all(b <= a + 1e-12 for a, b in zip(ys, ys[1:]))


def test_the_suite_attacks_exact_gradients_and_marks_approximations(small_data):
    registry = _registry_with_round()
    params = {"sampler": "ddim", "steps": 2, "grad_mode": "surrogate", "surrogate_steps": 1}
    d = registry.create("defense", "diffpure", params)
    assert d.gradient_rule() == "surrogate" and d.exact().gradient_rule() == "exact"
    x = small_data.lq.clone()
    from arena.match import generator

    with torch.no_grad():
        assert torch.equal(d.exact().purify(x, generator(3)), d.purify(x, generator(3)))
    listed, _ = _evaluate(registry, _match(registry, "diffpure", None, steps=2, params=params), small_data)
    assert listed.status == "done" and listed.protocol["lower_bound"] == "diffpure=surrogate"
    suite, _ = _evaluate(registry, _match(registry, "diffpure", "standard-2", steps=2, params=params,
                                          frozen=True), small_data)
    assert suite.status == "done" and suite.protocol["lower_bound"] is None  # attacked through `full`
    jpeg, _ = _evaluate(registry, _match(registry, "jpeg", "standard-2", steps=2), small_data)
    assert jpeg.protocol["lower_bound"] == "jpeg=bpda"  # no exact variant: still a lower bound


class Backwards(Defense):
    """Declared exact; its forward pass is the identity but its gradient is reversed, so a
    gradient attack climbs the wrong way while the probe sees a healthy gradient (a fixture)."""

    name = "backwards"
    gradient = "exact"

    def purify(self, x, generator):
        return 2 * x.detach() - x


def test_a_gradient_free_win_escalates_the_suite_to_bpda(tmp_path, monkeypatch):
    from sqlalchemy import select

    import arena.suite as suite_module
    from arena.run.driver import run_tournament
    from arena.store import models as m
    from arena.store import queries
    from arena.store.db import open_reader
    from helpers import config, registry_with

    monkeypatch.setitem(suite_module.SUITES, "mini", suite_module.Suite("mini", "1", (
        suite_module.SuiteAttack("apgd", {"restarts": 1}, steps=10),
        suite_module.SuiteAttack("noise", {}))))
    registry = registry_with(Backwards, role="defense")
    t = config(restorers=["identity"], defenses=["none", "backwards"], attacks=["mini"],
               threat_models=["adaptive"], data={"name": "embedded", "split": "test", "images": 2, "size": 16})
    db = str(tmp_path / "e.db")
    report = run_tournament(t, db, executor="local", progress=False, registry=registry)
    assert report.counts["done"] == 5  # two per system, and the escalated APGD on backwards
    engine = open_reader(db)
    with engine.connect() as conn:
        rows = {(r.defense, r.attack, bool(r.escalated)): r for r in conn.execute(select(m.matches))}
        adv = {k: [s.adv_psnr for s in conn.execute(select(m.scores).where(m.scores.c.match_id == r.id))]
               for k, r in rows.items()}
    assert "beat every gradient attack" in rows[("backwards", "apgd", True)].escalated
    mean = {k: sum(v) / len(v) for k, v in adv.items()}
    # under its declared gradient APGD climbs the wrong way: the defense looks robust
    assert mean[("backwards", "apgd", False)] > mean[("none", "apgd", False)] + 3
    assert abs(mean[("backwards", "apgd", True)] - mean[("none", "apgd", False)]) < 0.3
    board = {r["defense"]: r for r in queries.leaderboard(engine)}
    assert board["backwards"]["escalated"] == 1 and board["none"]["escalated"] == 0
    assert abs(board["backwards"]["robust_psnr"] - board["none"]["robust_psnr"]) < 0.3
    assert "gradient-attacks-beaten" in board["backwards"]["flags"]  # the flag stays on the row
    again = run_tournament(t, db, executor="local", progress=False, registry=registry)
    assert again.counts["done"] == 0 and again.planned == 5  # resumed: the escalation stays linked
    assert len(queries.leaderboard(open_reader(db))) == 2
