"""Base-class plumbing: projection, random starts, channels-last restorers."""

import torch

from arena.api import Attack
from arena.plugins import load_registry
from arena.threat import Budget, System


def test_project_and_random_start_stay_in_the_ball_and_range():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 8, 8, generator=g)
    for budget in (Budget(norm="linf", eps=0.05), Budget(norm="l2", eps=0.5)):
        far = x + torch.randn(x.shape, generator=g)
        for y in (Attack.project(far, x, budget), Attack.random_start(x, budget, g)):
            d = (y - x).flatten(1)
            norms = d.abs().amax(1) if budget.norm == "linf" else d.norm(dim=1)
            assert float(norms.max()) <= budget.eps * (1 + 1e-6) and 0 <= float(y.min()) and float(y.max()) <= 1


def test_channels_last_restorers_get_channels_last_inputs_and_the_same_values():
    registry = load_registry()
    cls = registry.get("restorer", "unet").cls
    assert cls.channels_last
    fast = cls(cls.validate({})).load("cpu")
    plain = cls(cls.validate({})).build()
    plain.load_state_dict(fast.state_dict())
    plain.eval()
    seen = []
    fast.register_forward_pre_hook(lambda mod, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    x = torch.rand(2, 3, 32, 32)
    out = System(fast, []).restore(x)
    assert seen == [True]
    assert torch.allclose(out, plain(x), atol=1e-5)
