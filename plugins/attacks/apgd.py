"""APGD: step-size-free PGD with momentum, halving the step at checkpoints when progress stalls."""

import torch

from arena.api import Attack, AttackParams, Field
from arena.hookspecs import hookimpl


def where(mask, a, b):
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


class APGD(Attack):
    """Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness...", ICML 2020)."""

    name = "apgd"

    class Params(AttackParams):
        restarts: int = Field(1, ge=1, le=100, description="runs; the best per image is kept")
        momentum: float = Field(0.75, ge=0, le=1, description="weight of the new step (alpha)")
        rho: float = Field(0.75, gt=0, le=1, description="halve the step when fewer than this "
                           "fraction of the steps since the last checkpoint raised the loss")
        random_start: bool = Field(False, description="start every run at a random point; if "
                                   "false (default) the first run starts at the clean input")

    def perturb(self, target, lq, hq, budget, generator):
        # Unlike the paper (classifiers), the first run starts at the clean input: a restorer is
        # close to linear over the budget, so its gradient there points to the best corner.
        best, best_loss = lq, torch.full((lq.shape[0],), -torch.inf, device=lq.device)
        for run in range(self.params.restarts):
            x = self.random_start(lq, budget, generator) if self.params.random_start or run else lq
            x, loss = self.climb(target, x, lq, hq, budget)
            best, best_loss = self.keep_best(best, best_loss, x, loss)
        return best

    def climb(self, target, x, lq, hq, budget):
        n, p = budget.steps, self.params
        marks = set(checkpoints(n))
        eta = torch.full((x.shape[0], 1, 1, 1), 2.0 * budget.eps, device=x.device)
        loss, grad = target.loss_grad(x, hq)
        best, best_loss, best_grad, x_prev = x, loss, grad, x
        raised = torch.zeros_like(loss)
        last, checked_best, was_halved = 0, loss, torch.zeros_like(loss, dtype=torch.bool)
        self.step_sizes = []  # per iteration, per image: the schedule this run followed
        for k in range(1, n):
            self.step_sizes.append(eta.flatten().tolist())
            z = self.project(self.ascend(x, grad, eta, budget), lq, budget)
            a = 1.0 if k == 1 else p.momentum
            x, x_prev = self.project(x + a * (z - x) + (1 - a) * (x - x_prev), lq, budget), x
            new_loss, grad = target.loss_grad(x, hq)
            raised += (new_loss > loss).float()
            loss = new_loss
            better = loss > best_loss
            best, best_grad = where(better, x, best), where(better, grad, best_grad)
            best_loss = torch.where(better, loss, best_loss)
            if k in marks:  # the two conditions of Croce & Hein, then restart from the best point
                halve = halving(raised, k - last, p.rho, was_halved, checked_best, best_loss)
                eta = where(halve, eta / 2, eta)
                x, x_prev = where(halve, best, x), where(halve, best, x_prev)  # no momentum
                grad, loss = where(halve, best_grad, grad), torch.where(halve, best_loss, loss)
                raised.zero_()
                last, checked_best, was_halved = k, best_loss, halve
        return best, best_loss


def checkpoints(n: int) -> list[int]:
    """The iterations at which APGD may halve its step (Croce & Hein, ICML 2020, Sec. 3.2):
    w_j = ceil(p_j n) for p_j <= 1, with p_0 = 0, p_1 = 0.22 and
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06). Computed in hundredths, exactly."""
    prev, p, out = 0, 22, []
    while p <= 100:
        w = -(-p * n // 100)  # ceil(p n / 100)
        if 0 < w < n and (not out or w > out[-1]):
            out.append(w)
        prev, p = p, p + max(p - prev - 3, 6)
    return out


def halving(raised, period, rho, was_halved, checked_best, best_loss):
    """Per image, whether to halve the step at a checkpoint: fewer than a fraction ``rho`` of the
    ``period`` steps since the last checkpoint raised the loss (condition 1), or the step was not
    halved last time and the best loss has not improved since (condition 2)."""
    return (raised < rho * period) | (~was_halved & (best_loss <= checked_best))


@hookimpl
def register_attacks(register):
    register(APGD)
