"""Conformance checks and pytest fixtures for plugin authors (a pytest plugin via ``pytest11``).

A third-party plugin's test file can be as short as::

    from arena.testing import check_attack
    from my_plugin import MyAttack

    def test_conforms():
        assert check_attack(MyAttack) == []

Each ``check_*`` returns a list of problems in plain words; empty means the component conforms.
They are the same checks the built-in plugins pass. ``run_check`` is what ``arena plugins check``
runs: the role's check under a deadline, with an exception or a timeout as one more problem.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from arena.api import Attack, Defense, Restorer, run_restorer
from arena.threat import Budget, System, Target, make_target, verify
from arena.timeout import Timeout, deadline

SHAPE = (2, 3, 16, 16)


class TinyNet(nn.Module):
    """A small residual CNN: cheap enough for any test, non-trivial enough to attack."""

    def __init__(self, width: int = 8, depth: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, 3, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        return lq + self.body(lq)


def tiny_model(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyNet().eval().requires_grad_(False)


def tiny_batch(shape=SHAPE, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(lq, hq): a smooth ground truth and a blurred, noisy input, both in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    hq = torch.nn.functional.interpolate(torch.rand(shape[0], 3, 4, 4, generator=g), size=shape[-2:],
                                         mode="bilinear", align_corners=False)
    blur = torch.nn.functional.avg_pool2d(hq, 3, stride=1, padding=1, count_include_pad=False)
    lq = (0.8 * blur + 0.05 + 0.02 * torch.randn(hq.shape, generator=g)).clamp(0, 1)
    return lq, hq


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _run_attack(attack: Attack, system: System, budget: Budget, seed: int, threat: str = "oblivious"):
    lq, hq = tiny_batch()
    with torch.no_grad():
        clean = system.restore(lq)
    target = make_target(attack.kind, system, threat, attack.params.objective, _gen(seed + 1), eot=2,
                         clean_out=clean, hq=hq, lq=lq, budget=budget, rounds=attack.rounds(),
                         surrogates=lambda name, params=None: System(tiny_model(1), []))
    x_adv = attack.run(target, lq, hq, budget, _gen(seed))
    return lq, x_adv, target


def check_attack(cls: type[Attack], params: dict[str, Any] | None = None) -> list[str]:
    """Budget (linf and l2), range, finiteness, determinism under a seed, query accounting."""
    problems: list[str] = []
    attack = cls(cls.validate(params or {}))
    system = System(tiny_model(), [])
    for budget in (Budget(norm="linf", eps=4 / 255, steps=3, queries=20),
                   Budget(norm="l2", eps=0.25, steps=3, queries=20)):
        try:
            lq, x1, target = _run_attack(attack, system, budget, seed=0)
            _, x2, _ = _run_attack(attack, system, budget, seed=0)
        except Exception as exc:  # a conformance check reports, it does not crash
            return problems + [f"{budget.norm}: perturb raised {type(exc).__name__}: {exc}"]
        problem = verify(x1, lq, budget, target.queries)
        if problem:
            problems.append(f"{budget.norm}: {problem}")
        if not torch.equal(x1, x2):
            problems.append(f"{budget.norm}: two runs with the same seed differ")
        if cls.kind == "score-based" and target.queries is None:
            problems.append(f"{budget.norm}: score-based attack made no counted query")
        if cls.kind == "white-box" and target.gradient_calls == 0:
            problems.append(f"{budget.norm}: white-box attack never asked for a gradient")
    return problems


def check_defense(cls: type[Defense], params: dict[str, Any] | None = None) -> list[str]:
    """Shape, range and dtype of purify; determinism under a seed; honest random/gradient flags."""
    problems: list[str] = []
    defense = cls(cls.validate(params or {}))
    lq, _ = tiny_batch()
    try:
        a = defense.purify(lq, _gen(0))
        b = defense.purify(lq, _gen(0))
        c = defense.purify(lq, _gen(1))
    except Exception as exc:
        return [f"purify raised {type(exc).__name__}: {exc}"]
    if a.shape != lq.shape or a.dtype != torch.float32:
        problems.append(f"purify returned {a.dtype} {tuple(a.shape)}, expected float32 {tuple(lq.shape)}")
    if not torch.isfinite(a).all() or float(a.min()) < 0 or float(a.max()) > 1:
        problems.append("purify output is not finite or leaves [0, 1]")
    if not torch.equal(a, b):
        problems.append("purify differs between two calls with the same seed")
    if cls.random and torch.equal(a, c) and defense.transforms_input:
        problems.append("declared random but two seeds give the same output")
    if not cls.random and not torch.equal(a, c):
        problems.append("output changes with the seed but the defense is not declared random")
    x = lq.clone().requires_grad_(True)
    system = System(nn.Identity(), [defense])
    y = system.purify_differentiable(x, _gen(0))
    if defense.transforms_input:
        if not y.requires_grad:
            problems.append(f"gradient rule '{cls.gradient}' gives no gradient path")
        else:
            (g,) = torch.autograd.grad(y.sum(), x)
            if not torch.isfinite(g).all() or float(g.abs().sum()) == 0:
                problems.append(f"gradient rule '{cls.gradient}' gives a zero or non-finite gradient")
    return problems


def check_restorer(cls: type[Restorer], params: dict[str, Any] | None = None, code_dim: int = 5,
                   weights: bool = True) -> list[str]:
    """Odd sizes, range of shape, finiteness, eval determinism, gradient flowing to the input."""
    problems: list[str] = []
    r = cls(cls.validate(params or {}))
    try:
        model = r.load("cpu") if weights else r.build().eval()
    except Exception as exc:
        return [f"could not build/load: {type(exc).__name__}: {exc}"]
    for shape in ((1, 3, 33, 47), (2, 3, 16, 16)):
        lq, _ = tiny_batch(shape)
        code = torch.rand(shape[0], code_dim, generator=_gen(0))
        x = lq.clone().requires_grad_(True)
        try:
            out = run_restorer(model, x, code, cls.needs_psf)
            out2 = run_restorer(model, lq, code, cls.needs_psf)
        except Exception as exc:
            problems.append(f"{shape}: forward raised {type(exc).__name__}: {exc}")
            continue
        if out.shape != lq.shape:
            problems.append(f"{shape}: output shape {tuple(out.shape)}")
            continue
        if not torch.isfinite(out).all():
            problems.append(f"{shape}: non-finite output")
        if not torch.equal(out.detach(), out2):
            problems.append(f"{shape}: eval mode is not deterministic")
        (g,) = torch.autograd.grad(out.sum(), x)
        if float(g.abs().sum()) == 0 or not torch.isfinite(g).all():
            problems.append(f"{shape}: no finite, non-zero gradient reaches the input")
    return problems


def run_check(cls: type[Restorer | Attack | Defense], role: str, timeout: float | None = 120) -> list[str]:
    """The role's conformance check; an exception or running past ``timeout`` seconds (None: no
    limit; main thread only, see ``arena.timeout``) becomes the problem ``Type: message``."""
    check = {"restorer": check_restorer, "attack": check_attack, "defense": check_defense}[role]
    try:
        with deadline(timeout, "the conformance check"):
            return check(cls)
    except (Exception, Timeout) as exc:  # a plugin's failure is reported, never a traceback
        return [f"{type(exc).__name__}: {exc}"]


# -- pytest fixtures (available to any project once udc-arena is installed) --------------------
# pytest is a test extra: plugins import TinyNet from here, so without pytest the checks and
# helpers must still import; only the fixtures need it, and pytest is there whenever they are used.

try:
    import pytest
except ImportError:  # pragma: no cover - exercised by installs without the test extra
    pytest = None

if pytest is not None:

    @pytest.fixture
    def arena_registry():
        """A fresh registry of every installed plugin (no global state is shared between tests)."""
        from arena.plugins import load_registry

        return load_registry()

    @pytest.fixture
    def tiny_images():
        """(lq, hq) of shape (2, 3, 16, 16) in [0, 1]."""
        return tiny_batch()

    @pytest.fixture
    def tiny_restorer():
        """A seeded TinyNet in eval mode."""
        return tiny_model()
