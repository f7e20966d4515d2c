"""SignHunter: the arena's conformance checks, and that its search finds what it should."""

import torch
from torch import nn

from arena.testing import check_attack
from arena.threat import Budget, System, Target
from arena_example_plugin.signhunter import SignHunter


def attack(model, lq, hq, budget):
    target = Target(System(model, []), "oblivious", "mse", torch.Generator().manual_seed(1))
    x_adv = SignHunter().run(target, lq, hq, budget, torch.Generator().manual_seed(0))
    return x_adv, target


def mse(a, b):
    return (a - b).pow(2).flatten(1).mean(1)


def test_conforms():
    assert check_attack(SignHunter) == []


def test_finds_the_worst_case_of_a_separable_loss():
    # Through the identity, the MSE to the ground truth is worst with every pixel pushed eps
    # away from it; a full pass over single signs must find exactly that vertex.
    g = torch.Generator().manual_seed(3)
    hq = torch.rand(2, 3, 4, 4, generator=g) * 0.8 + 0.1
    lq = (hq + 0.05 * torch.randn(hq.shape, generator=g)).clamp(0, 1)
    budget = Budget(norm="linf", eps=8 / 255, queries=200)
    x_adv, target = attack(nn.Identity(), lq, hq, budget)
    worst = (lq + budget.eps * torch.where(lq >= hq, 1.0, -1.0)).clamp(0, 1)
    assert torch.allclose(mse(x_adv, hq), mse(worst, hq), rtol=1e-5)
    random_signs = (lq + budget.eps * torch.randn(lq.shape, generator=g).sign()).clamp(0, 1)
    assert (mse(x_adv, hq) > mse(random_signs, hq)).all()
    assert target.queries.tolist() == [200, 200]


def test_raises_the_loss_of_a_cnn_within_its_query_budget(tiny_restorer, tiny_images):
    lq, hq = tiny_images
    for norm, eps in (("linf", 8 / 255), ("l2", 0.5)):
        budget = Budget(norm=norm, eps=eps, queries=50)
        x_adv, target = attack(tiny_restorer, lq, hq, budget)
        x_start, _ = attack(tiny_restorer, lq, hq, budget.model_copy(update={"queries": 1}))
        with torch.no_grad():
            clean, adv = mse(tiny_restorer(lq), hq), mse(tiny_restorer(x_adv), hq)
            start = mse(tiny_restorer(x_start), hq)
        assert (adv > clean).all() and (adv > start).all()
        assert target.queries.tolist() == [50, 50]
        assert target.gradient_calls == 0  # score-based: it never asks for a gradient
