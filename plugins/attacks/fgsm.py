"""FGSM: one signed-gradient step of size eps."""

from arena.api import Attack
from arena.hookspecs import hookimpl


class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al., ICLR 2015); one step, L2-normalised under l2."""

    name = "fgsm"

    def perturb(self, target, lq, hq, budget, generator):
        _, grad = target.loss_grad(lq, hq)
        return self.project(self.ascend(lq, grad, budget.eps, budget), lq, budget)


@hookimpl
def register_attacks(register):
    register(FGSM)
