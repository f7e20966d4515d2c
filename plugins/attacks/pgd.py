"""PGD under L-inf or L2, random start, restarts, best iterate kept per image.

Several attacks of the suite are PGD with one piece changed (the start, the step direction, the
loss that steers the step, the system it is crafted on): they subclass ``PGD`` and override
``gradient``, ``score`` or ``climb``. ``steered_loss_grad`` serves attacks whose step follows a
loss other than the match's objective (CosPGD, LPIPS).
"""

import torch

from arena.api import Attack, AttackParams, Field
from arena.hookspecs import hookimpl
from arena.threat import objective_loss


def mean_loss(target, x, hq):
    """Objective at x without gradient, averaged over as many draws as ``loss_grad`` uses, so
    the last iterate is ranked on the same footing as the others."""
    with torch.no_grad():
        return sum(target.loss(x, hq) for _ in range(target.eot)) / target.eot


def reference(target, hq):
    """What the objective compares the output with: the clean output for mse_clean, else hq."""
    if target.objective != "mse_clean":
        return hq
    if target.clean_out is None:
        raise ValueError("objective 'mse_clean' needs the clean output")
    return target.clean_out


def steered_loss_grad(target, x, hq, steer):
    """``target.loss_grad`` for a step that follows another loss.

    ``steer(out, ref)`` returns ``(rank, drive)``, two per-image losses: ``rank`` decides which
    iterate is kept, ``drive`` is differentiated. Averaged over EOT draws and recorded in the
    target's trace like ``loss_grad``.
    """
    x = x.detach().requires_grad_(True)
    ref = reference(target, hq)
    rank_sum, grad_sum = torch.zeros(x.shape[0], device=x.device), torch.zeros_like(x)
    for _ in range(target.eot):
        rank, drive = steer(target.forward(x), ref)
        (grad,) = torch.autograd.grad(drive.sum(), x)
        rank_sum += rank.detach()
        grad_sum += grad
    rank, grad = rank_sum / target.eot, grad_sum / target.eot
    if target.start_grad is None:
        target.start_grad = {"finite": bool(torch.isfinite(grad).all()),
                             "abs_mean": float(grad.abs().mean())}
    target.gradient_calls += 1
    target.trace.append(float(rank.mean()))
    return rank, grad


def objective(target):
    """The match's objective as a ``steer`` ranking term: ``(out, ref) -> per-image loss``."""
    return lambda out, ref: objective_loss(target.objective, out, ref)


class PGD(Attack):
    """Projected gradient descent (Madry et al., ICLR 2018) on the restoration loss."""

    name = "pgd"

    class Params(AttackParams):
        step: float = Field(2.5, gt=0, le=100, description="step size as a multiple of eps/steps")
        random_start: bool = Field(True, description="start every run at a random point of the "
                                   "ball; if false the first run starts at the clean input and "
                                   "only the restarts after it at random points")
        restarts: int = Field(1, ge=1, le=100, description="runs; the best per image is kept")

    def perturb(self, target, lq, hq, budget, generator):
        p = self.params
        best, best_loss = lq, torch.full((lq.shape[0],), -torch.inf, device=lq.device)
        for run in range(p.restarts):
            # Restorers are close to linear over the budget, so the gradient at the clean input
            # already points to the best corner; a random start can only find a worse one there.
            # Restarts from the same clean point would repeat the first run, hence random.
            x = self.random_start(lq, budget, generator) if p.random_start or run else lq
            best, best_loss = self.climb(target, x, lq, hq, budget, best, best_loss)
        return best

    def gradient(self, target, x, hq):
        """(per-image loss that ranks iterates, gradient that steers the step)."""
        return target.loss_grad(x, hq)

    def score(self, target, x, hq):
        """The ranking loss of ``gradient`` without the gradient (for the last iterate)."""
        return mean_loss(target, x, hq)

    def climb(self, target, x, lq, hq, budget, best, best_loss):
        alpha = self.params.step * budget.eps / budget.steps
        for _ in range(budget.steps):
            loss, grad = self.gradient(target, x, hq)
            best, best_loss = self.keep_best(best, best_loss, x, loss)
            x = self.project(self.ascend(x, grad, alpha, budget), lq, budget)
        return self.keep_best(best, best_loss, x, self.score(target, x, hq))


@hookimpl
def register_attacks(register):
    register(PGD)
