"""Attack suites, entered by name in a config: ``attacks = ["standard"]``.

A suite is a fixed, versioned list of attacks with their own iterations and query budgets, so a
robustness number does not depend on what a config happens to list: the restoration
counterpart of AutoAttack (Croce & Hein, ICML 2020). The config still chooses the threat models,
norms and radii; the suite fixes everything else. Attacks listed beside a suite add to each
image's worst case, they never replace the suite's.

A change to a suite is a new version. The version is part of every suite match's key, so a new
version reruns its matches and the leaderboard of a tournament never mixes two versions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SuiteAttack:
    """One attack of a suite: its parameters and the iterations/queries the suite fixes."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    steps: int | None = None  # replaces the budget's steps
    queries: int | None = None  # replaces the budget's query limit


@dataclass(frozen=True)
class Suite:
    name: str
    version: str
    attacks: tuple[SuiteAttack, ...]
    #: a transfer attack crafts on the first of these that is not the attacked restorer
    surrogates: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}"

    def for_restorer(self, restorer: str) -> list[tuple[dict[str, Any], dict[str, int]]]:
        """(attack config entry, budget overrides) for each attack, against ``restorer``."""
        out = []
        for a in self.attacks:
            entry = {"name": a.name, **a.params}
            if a.name == "transfer":
                entry["surrogate"] = next(s for s in self.surrogates if s != restorer)
            overrides = {k: v for k, v in (("steps", a.steps), ("queries", a.queries)) if v is not None}
            out.append((entry, overrides))
        return out


#: Version 1. Its iterations and queries are provisional: benchmarks/bench_suite.py prints each
#: system's robust PSNR under the suite and under twice its iterations and queries, the check a
#: version must pass (a difference under 0.1 dB) before it is called converged.
STANDARD = Suite(
    name="standard",
    version="1",
    attacks=(
        # step-size-free PGD on the MSE objective (momentum, step halving at checkpoints)
        SuiteAttack("apgd", {"restarts": 1}, steps=50),
        # a second objective: structural damage, 1 - SSIM
        SuiteAttack("ssim", {"restarts": 1}, steps=50),
        # gradient-free: catches a defense whose gradients are masked
        SuiteAttack("square", {}, queries=1000),
        # crafted on another restorer of the zoo, sent unchanged
        SuiteAttack("transfer", {"restarts": 1}, steps=50),
    ),
    surrogates=("unet", "nafnet"),
)

SUITES: dict[str, Suite] = {s.name: s for s in (STANDARD,)}
