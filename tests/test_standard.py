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
