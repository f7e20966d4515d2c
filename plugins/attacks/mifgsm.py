"""MI-FGSM: I-FGSM whose step follows an accumulated, L1-normalised gradient."""

from arena.api import Field
from arena.hookspecs import hookimpl
from arena_plugins.attacks.bim import BIM


class MIFGSM(BIM):
    """Momentum iterative FGSM, MI-FGSM (Dong et al., CVPR 2018)."""

    name = "mifgsm"

    class Params(BIM.Params):
        step: float = Field(1.0, gt=0, le=100, description="step size as a multiple of eps/steps")
        decay: float = Field(1.0, ge=0, le=10, description="momentum decay factor mu")

    def climb(self, target, x, lq, hq, budget, best, best_loss):
        alpha = self.params.step * budget.eps / budget.steps
        g = 0
        for _ in range(budget.steps):
            loss, grad = self.gradient(target, x, hq)
            best, best_loss = self.keep_best(best, best_loss, x, loss)
            l1 = grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
            g = self.params.decay * g + grad / l1
            x = self.project(self.ascend(x, g, alpha, budget), lq, budget)
        return self.keep_best(best, best_loss, x, self.score(target, x, hq))


@hookimpl
def register_attacks(register):
    register(MIFGSM)
