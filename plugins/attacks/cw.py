"""C&W-L2 adapted to regression: the smallest L2 perturbation that degrades the output enough."""

import torch

from arena.api import Attack, AttackParams, Field
from arena.hookspecs import hookimpl


def pick(mask, a, b):
    return torch.where(mask.view(-1, 1, 1, 1), a, b)


class CW(Attack):
    """C&W-L2 (Carlini & Wagner, IEEE S&P 2017), adapted to regression.

    Success means the loss reaches ``loss_ratio`` times the clean loss (a PSNR drop of
    10 log10(ratio) dB under mse). Per image it minimises ||delta||^2 + c * max(1 - loss/goal, 0)
    (zero confidence) with Adam in tanh space, and binary-searches c. It returns the shortest
    successful perturbation (else the most damaging iterate), projected into the budget;
    ``self.stats`` holds the L2 norms it needed (inf where it never succeeded).
    """

    name = "cw"
    minimum_norm = True

    class Params(AttackParams):
        binary_steps: int = Field(9, ge=1, le=50, description="binary-search steps on c")
        c_init: float = Field(1.0, gt=0, le=1e6, description="initial trade-off constant c")
        lr: float = Field(0.01, gt=0, le=10, description="Adam learning rate in tanh space")
        loss_ratio: float = Field(2.0, gt=1, le=1e6, description="success: loss >= ratio * clean")

    def rounds(self) -> int:
        return self.params.binary_steps  # each binary-search step is a run of budget.steps

    def perturb(self, target, lq, hq, budget, generator):
        p, n, dev = self.params, lq.shape[0], lq.device
        # The floor keeps the goal meaningful where the clean loss is ~0 (mse_clean).
        goal = p.loss_ratio * target.mean_loss(lq, hq).clamp_min(1e-4)
        w0 = torch.atanh((2 * lq - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        inf = torch.full((n,), torch.inf, device=dev)
        c, lo, hi = torch.full((n,), p.c_init, device=dev), torch.zeros(n, device=dev), inf
        short, short_x, first, top, top_x = inf, lq, inf, -inf, lq
        for _ in range(p.binary_steps):
            w = torch.nn.Parameter(w0.clone())
            opt = torch.optim.Adam([w], lr=p.lr)
            done = torch.zeros(n, dtype=torch.bool, device=dev)
            for _ in range(budget.steps):
                x = (torch.tanh(w.detach()) + 1) / 2
                loss, grad = target.loss_grad(x, hq)
                norm = (x - lq).flatten(1).norm(dim=1)
                ok = loss >= goal
                first = torch.where(ok & first.isinf(), norm, first)
                shorter = ok & (norm < short)
                short_x, short = pick(shorter, x, short_x), torch.where(shorter, norm, short)
                top_x, top = self.keep_best(top_x, top, x, loss)
                done |= ok
                # d/dx of ||x - lq||^2 + c * max(1 - loss / goal, 0), chained through tanh
                pull = torch.where(ok, 0.0, c / goal).view(-1, 1, 1, 1)
                w.grad = (2 * (x - lq) - pull * grad) * (1 - torch.tanh(w.detach()) ** 2) / 2
                opt.step()
            hi = torch.where(done, torch.minimum(hi, c), hi)
            lo = torch.where(done, lo, torch.maximum(lo, c))
            c = torch.where(hi.isinf(), c * 10, (lo + hi) / 2)
        self.stats = {"l2_needed": short.tolist(), "l2_first_success": first.tolist()}
        return self.project(pick(short.isfinite(), short_x, top_x), lq, budget)


@hookimpl
def register_attacks(register):
    register(CW)
