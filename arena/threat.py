"""Threat models: the budget, the defended system, and the Target an attack sees.

Under ``oblivious`` the attacker differentiates the undefended restorer and the defense is
applied only at evaluation (the study's setting). Under ``adaptive`` the attacker gets the whole
defended system: exact gradients where a link is differentiable, BPDA where it declares it, and
EOT over draws of random links. Score-based queries always go through the full defended system.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

import torch
from pydantic import Field, field_validator

from arena.api import Defense, Params
from arena.metrics import ssim

ThreatModel = Literal["oblivious", "adaptive"]
THREAT_MODELS: tuple[str, ...] = ("oblivious", "adaptive")

#: Relative and absolute slack when checking ||delta|| <= eps, for float rounding only.
NORM_RTOL = 1e-5
NORM_ATOL = 1e-6


class Budget(Params):
    """What an attack may spend: norm ball, iterations and model queries."""

    norm: Literal["linf", "l2"] = "linf"
    eps: float = Field(8 / 255, gt=0, le=64, description="radius, in [0,1] image units")
    steps: int = Field(10, ge=1, le=100_000, description="iterations of iterative attacks")
    queries: int = Field(1000, ge=1, le=10_000_000, description="query limit per image")

    @field_validator("eps", mode="before")
    @classmethod
    def _fraction(cls, v):
        # "8/255" reads better in a config than 0.03137...
        if isinstance(v, str):
            try:
                return float(Fraction(v.replace(" ", "")))
            except (ValueError, ZeroDivisionError):
                raise ValueError("eps must be a number or a fraction like '8/255'") from None
        return v

    def label(self) -> str:
        return f"{self.norm} eps={self.eps:.4g}"


class System:
    """A restorer behind a chain of defense links, each keeping its own gradient rule."""

    def __init__(self, model: torch.nn.Module, links: list[Defense], code: torch.Tensor | None = None):
        self.model = model
        self.links = list(links)
        self.code = code
        self.random = any(link.random for link in self.links)

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self.model, "arena_channels_last", False):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x) if self.code is None else self.model(x, self.code)

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for link in self.links:
            x = link.purify(x, generator)
        return x

    def purify_differentiable(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for link in self.links:
            if link.gradient == "exact":
                x = link.purify(x, generator)
            else:  # BPDA: forward is the real transform, backward goes through approx
                with torch.no_grad():
                    y = link.purify(x, generator)
                a = link.approx(x)
                x = a + (y - a).detach()
        return x

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.restore(self.purify(x, generator)).clamp(0, 1)


def objective_loss(objective: str, out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image loss; higher means a worse restoration."""
    if objective in ("mse", "mse_clean"):
        return (out - ref).pow(2).flatten(1).mean(1)
    if objective == "l1":
        return (out - ref).abs().flatten(1).mean(1)
    if objective == "ssim":
        return 1.0 - ssim(out, ref)
    raise ValueError(f"unknown objective '{objective}' (allowed: mse, mse_clean, l1, ssim)")


class Target:
    """What an attack sees: a differentiable ``forward``/``loss``/``loss_grad`` and a counted
    ``query`` that always goes through the full defended system."""

    def __init__(
        self,
        system: System,
        threat: ThreatModel,
        objective: str,
        generator: torch.Generator,
        eot: int = 1,
        clean_out: torch.Tensor | None = None,
    ):
        self.system = system
        self.threat = threat
        self.objective = objective
        self.generator = generator
        self.eot = eot if (threat == "adaptive" and system.random) else 1
        self.clean_out = clean_out
        self.device = next(iter(system.model.parameters()), torch.empty(0)).device
        self.queries: torch.Tensor | None = None
        self.gradient_calls = 0
        self.trace: list[float] = []  # mean loss per gradient call: the convergence record
        self.start_grad: dict[str, float] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.threat == "adaptive":
            x = self.system.purify_differentiable(x, self.generator)
        return self.system.restore(x)

    def _reference(self, hq: torch.Tensor) -> torch.Tensor:
        if self.objective == "mse_clean":
            if self.clean_out is None:
                raise ValueError("objective 'mse_clean' needs the clean output")
            return self.clean_out
        return hq

    def loss(self, x: torch.Tensor, hq: torch.Tensor) -> torch.Tensor:
        return objective_loss(self.objective, self.forward(x), self._reference(hq))

    def loss_grad(self, x: torch.Tensor, hq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image loss at x and its gradient, averaged over EOT draws where the system is random."""
        x = x.detach().requires_grad_(True)
        loss_sum = torch.zeros(x.shape[0], device=x.device)
        grad_sum = torch.zeros_like(x)
        for _ in range(self.eot):
            loss = self.loss(x, hq)
            (grad,) = torch.autograd.grad(loss.sum(), x)
            loss_sum += loss.detach()
            grad_sum += grad
        loss, grad = loss_sum / self.eot, grad_sum / self.eot
        if self.start_grad is None:
            self.start_grad = {
                "finite": bool(torch.isfinite(grad).all()),
                "abs_mean": float(grad.abs().mean()),
            }
        self.gradient_calls += 1
        self.trace.append(float(loss.mean()))
        return loss, grad

    @torch.no_grad()
    def query(self, x: torch.Tensor, hq: torch.Tensor) -> torch.Tensor:
        """Per-image loss of the full defended system, counted against the query budget."""
        if self.queries is None:
            self.queries = torch.zeros(x.shape[0], dtype=torch.long)
        self.queries += 1
        out = self.system.restore(self.system.purify(x, self.generator))
        return objective_loss(self.objective, out, self._reference(hq))


def verify(x_adv: torch.Tensor, lq: torch.Tensor, budget: Budget, queries: torch.Tensor | None) -> str | None:
    """The arena's own check of an adversarial batch. Returns why it breaks the rules, or None."""
    if x_adv.shape != lq.shape:
        return f"adversarial batch has shape {tuple(x_adv.shape)}, expected {tuple(lq.shape)}"
    if not torch.isfinite(x_adv).all():
        return "adversarial batch has non-finite values"
    lo, hi = float(x_adv.min()), float(x_adv.max())
    if lo < 0.0 or hi > 1.0:
        return f"adversarial batch leaves [0, 1] (min {lo:.4g}, max {hi:.4g})"
    delta = (x_adv - lq).flatten(1)
    norms = delta.abs().amax(1) if budget.norm == "linf" else delta.norm(dim=1)
    limit = budget.eps * (1 + NORM_RTOL) + NORM_ATOL
    worst = float(norms.max())
    if worst > limit:
        return f"perturbation {budget.norm} norm {worst:.6g} exceeds eps {budget.eps:.6g}"
    if queries is not None and int(queries.max()) > budget.queries:
        return f"{int(queries.max())} queries exceed the limit of {budget.queries}"
    return None
