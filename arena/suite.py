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
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class SuiteAttack:
    """One attack of a suite: its parameters and the iterations/queries the suite fixes."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    steps: int | None = None  # replaces the budget's steps
    queries: int | None = None  # replaces the budget's query limit
    #: against a random system (adaptive), also run with its randomness frozen: the
    #: fixed-randomness score (Liu & Wei 2025)
    frozen: bool = False


@dataclass(frozen=True)
class Suite:
    name: str
    version: str
    attacks: tuple[SuiteAttack, ...]
    #: a transfer attack crafts on the first of these that is not the attacked restorer
    surrogates: tuple[str, ...] = ()
    #: EOT draws are this many times the rule's count (the convergence benchmark doubles it)
    eot_factor: int = 1

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}"

    def for_restorer(self, restorer: str) -> list[tuple[dict[str, Any], dict[str, int], bool]]:
        """(attack config entry, budget overrides, frozen variant wanted) for each attack,
        against ``restorer``."""
        out = []
        for a in self.attacks:
            entry = {"name": a.name, **a.params}
            if a.name == "transfer":
                entry["surrogate"] = next(s for s in self.surrogates if s != restorer)
            overrides = {k: v for k, v in (("steps", a.steps), ("queries", a.queries)) if v is not None}
            out.append((entry, overrides, a.frozen))
        return out


#: Version 2 (version 1 had no protocol for random defenses). Its iterations and queries are
#: provisional: benchmarks/bench_suite.py prints each system's robust PSNR under the suite and
#: under twice its iterations and queries, the check a version must pass (a difference under
#: 0.1 dB) before it is called converged.
STANDARD = Suite(
    name="standard",
    version="2",
    attacks=(
        # step-size-free PGD on the MSE objective (momentum, step halving at checkpoints)
        SuiteAttack("apgd", {"restarts": 1}, steps=50, frozen=True),
        # a second objective: structural damage, 1 - SSIM
        SuiteAttack("ssim", {"restarts": 1}, steps=50, frozen=True),
        # gradient-free: catches a defense whose gradients are masked
        SuiteAttack("square", {}, queries=1000),
        # crafted on another restorer of the zoo, sent unchanged
        SuiteAttack("transfer", {"restarts": 1}, steps=50),
    ),
    surrogates=("unet", "nafnet"),
)

SUITES: dict[str, Suite] = {s.name: s for s in (STANDARD,)}


def by_label(label: str | None) -> Suite | None:
    """The suite a match names (``name-version``), if it is known."""
    return next((s for s in SUITES.values() if s.label == label), None)


# --------------------------------------------------------------------------------------------
# The protocol for random defenses: how many EOT draws a suite attack averages
# --------------------------------------------------------------------------------------------

#: A suite match stores this as its EOT count: the worker measures the count by the rule below.
EOT_BY_RULE = 0
#: The rule: the smallest of these counts whose averaged gradient has a cosine of at least
#: EOT_COSINE, on every image, to a reference averaged over EOT_REFERENCE other draws.
EOT_COUNTS = (1, 2, 4, 8, 16, 32)
EOT_REFERENCE = 64
EOT_COSINE = 0.9


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image cosine of two gradient batches; 1 where both are zero (nothing to estimate)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    na, nb = a.norm(dim=1), b.norm(dim=1)
    cos = (a * b).sum(1) / (na * nb).clamp_min(1e-300)
    return torch.where((na == 0) & (nb == 0), torch.ones_like(cos), cos)


def eot_count(draw: Callable[[int], torch.Tensor], counts: tuple[int, ...] = EOT_COUNTS,
              reference: int = EOT_REFERENCE, threshold: float = EOT_COSINE) -> dict[str, Any]:
    """The EOT count of the rule. ``draw(k)`` is the gradient (per image) under the k-th
    independent draw of the system's randomness: draws 0 .. reference-1 make the reference,
    the following ones the candidates (each count extends the previous). Returns ``count``
    (the largest candidate if none reaches the threshold), the worst per-image ``cosine`` at
    that count, and whether the threshold was ``reached``."""
    ref = sum(draw(k) for k in range(reference)) / reference
    total, used, cos = None, 0, None
    for count in counts:
        while used < count:
            g = draw(reference + used)
            total = g if total is None else total + g
            used += 1
        cos = float(cosine(total / used, ref).min())
        if cos >= threshold:
            return {"count": count, "cosine": cos, "reached": True, "reference": reference}
    return {"count": counts[-1], "cosine": cos, "reached": False, "reference": reference}
