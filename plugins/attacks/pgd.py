"""PGD under L-inf or L2, random start, restarts, best iterate kept per image.

Several attacks of the suite are PGD with one piece changed (the start, the step direction, the
loss that steers the step, the system it is crafted on): they subclass ``PGD`` and override
``gradient``, ``score`` or ``climb``. Attacks whose step follows a loss other than the match's
objective (CosPGD, LPIPS) pass ``steer`` to ``target.loss_grad``.
"""

import torch

from arena.api import Attack, AttackParams, Field
from arena.hookspecs import hookimpl
from arena.threat import objective_loss


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
        return target.mean_loss(x, hq)

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
