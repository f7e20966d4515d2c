"""Conformance checks for attacks that go past ``arena.testing.check_attack``.

``check_attack_more(cls, params)`` returns a list of problems in plain words, like the checks in
``arena.testing`` (which it runs first), adding: every objective the attack accepts, the
adaptive threat model on a random defended system (EOT), an odd image size and a batch of one,
and, for attacks that query, tight query budgets. Candidates for ``arena.testing``.
"""

from __future__ import annotations

from typing import Any

import torch

from arena.api import Attack, Defense
from arena.testing import check_attack, tiny_batch, tiny_model
from arena.threat import Budget, System, Target, make_target, verify

OBJECTIVES = ("mse", "mse_clean", "l1", "ssim")


class GaussianNoise(Defense):
    """Additive Gaussian noise, a random differentiable input defense (for EOT paths)."""

    name = "test-gaussian"
    random = True

    def purify(self, x, generator):
        noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
        return (x + 0.02 * noise).clamp(0, 1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run_attack(attack: Attack, system: System, budget: Budget, *, threat: str = "oblivious",
               shape=(2, 3, 16, 16), eot: int = 2, seed: int = 0):
    """One attack run on tiny_batch(shape) as a match would do it: (lq, x_adv, target)."""
    lq, hq = tiny_batch(shape)
    with torch.no_grad():
        clean = system.restore(lq)
    target = make_target(attack.kind, system, threat, attack.params.objective, _gen(seed + 1), eot=eot,
                         clean_out=clean, hq=hq, lq=lq, budget=budget, rounds=attack.rounds(),
                         surrogates=lambda name, params=None: System(tiny_model(1), []))
    return lq, attack.run(target, lq, hq, budget, _gen(seed)), target


def _accepted_objectives(cls: type[Attack], params: dict[str, Any]) -> list[str]:
    ok = []
    for objective in OBJECTIVES:
        try:
            cls.validate({**params, "objective": objective})
        except ValueError:
            continue
        ok.append(objective)
    return ok


def check_attack_more(cls: type[Attack], params: dict[str, Any] | None = None) -> list[str]:
    params = dict(params or {})
    problems = [f"arena.testing: {p}" for p in check_attack(cls, params)]
    budgets = (Budget(norm="linf", eps=4 / 255, steps=3, queries=12),
               Budget(norm="l2", eps=0.3, steps=3, queries=12))
    plain, noisy = System(tiny_model(), []), System(tiny_model(), [GaussianNoise()])
    shape = (2, 3, 16, 16)
    cases = [(f"objective {o}", {**params, "objective": o}, plain, "oblivious", shape)
             for o in _accepted_objectives(cls, params)]
    cases += [("adaptive, random defense", params, noisy, "adaptive", shape),
              ("odd size, batch of one", params, plain, "oblivious", (1, 3, 13, 19))]
    for label, p, system, threat, shape in cases:
        attack = cls(cls.validate(p))
        for budget in budgets:
            where = f"{label}, {budget.norm}"
            try:
                lq, x1, target = run_attack(attack, system, budget, threat=threat, shape=shape)
                _, x2, _ = run_attack(attack, system, budget, threat=threat, shape=shape)
            except Exception as exc:
                problems.append(f"{where}: raised {type(exc).__name__}: {exc}")
                continue
            problem = verify(x1, lq, budget, target.queries)
            if problem:
                problems.append(f"{where}: {problem}")
            if not torch.equal(x1, x2):
                problems.append(f"{where}: two runs with the same seed differ")
    if cls.kind in ("score-based", "decision-free"):
        problems += _check_queries(cls, params)
    return problems


def _check_queries(cls: type[Attack], params: dict[str, Any]) -> list[str]:
    """Tight budgets: never over, and a score-based attack should spend what it is given."""
    problems = []
    attack = cls(cls.validate(params))
    for queries in (1, 2, 3, 10):
        budget = Budget(norm="linf", eps=4 / 255, steps=3, queries=queries)
        try:
            _, _, target = run_attack(attack, System(tiny_model(), []), budget)
        except Exception as exc:
            problems.append(f"{queries} queries: raised {type(exc).__name__}: {exc}")
            continue
        used = 0 if target.queries is None else int(target.queries.max())
        if used > queries:
            problems.append(f"used {used} queries with a budget of {queries}")
        if cls.kind == "score-based" and used == 0:
            problems.append(f"made no query with a budget of {queries}")
    return problems
