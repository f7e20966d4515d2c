"""Square Attack: random square patches at the budget's boundary, kept when they raise the loss."""

import torch

from arena.api import Attack, AttackParams, Field
from arena.hookspecs import hookimpl

# Iterations (out of 10 000) at which the patch area halves, as in the paper's schedule.
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


class Square(Attack):
    """Square Attack (Andriushchenko et al., ECCV 2020) on the restoration loss.

    L-inf as in the paper: vertical-stripe start, then square windows set to +/- eps per
    channel. L2 keeps the paper's mass transfer between two windows in a simpler form: the new
    window, constant +/- per channel, takes the norm held by itself and a second window (which
    is cleared) plus any unused budget; the start is the same stripes at norm eps.
    """

    name = "square"
    kind = "score-based"

    class Params(AttackParams):
        p_init: float = Field(0.05, gt=0, le=1, description="initial fraction of pixels per square")
        iterations: int = Field(10_000, ge=1, le=10_000_000, description="squares tried at most")

    def perturb(self, target, lq, hq, budget, generator):
        n, c, h, w = lq.shape
        total = min(self.params.iterations, budget.queries - 1)
        stripes = self.signs((n, c, 1, w), generator, lq.device).expand_as(lq)
        scale = budget.eps if budget.norm == "linf" else budget.eps / (c * h * w) ** 0.5
        x = (lq + scale * stripes).clamp(0, 1)
        loss = target.query(x, hq)
        for i in range(total):
            if target.queries_left() < 1:
                break
            cand = self.propose(x, lq, budget, i, total, generator)
            cand_loss = target.query(cand, hq)
            better = cand_loss > loss
            x = torch.where(better.view(-1, 1, 1, 1), cand, x)
            loss = torch.where(better, cand_loss, loss)
        return x

    def propose(self, x, lq, budget, i, total, generator):
        n, c, h, w = x.shape
        frac = self.params.p_init / 2 ** sum(i * 10_000 // max(total, 1) > t for t in HALVINGS)
        s = max(1, min(round((frac * h * w) ** 0.5), min(h, w) - 1))
        delta, signs = x - lq, self.signs((n, c, 1, 1), generator, x.device)
        window = self.window(x, s, generator)
        if budget.norm == "linf":
            return self.project(lq + delta * (1 - window) + budget.eps * signs * window, lq, budget)
        # L2: the window takes the norm held by itself and by a second window, which is
        # cleared, plus any unused budget: mass moves to where the search keeps it.
        other = self.window(x, s, generator) * (1 - window)
        cleared = (window + other).clamp(max=1)
        held = (delta * cleared).flatten(1).pow(2).sum(1)
        free = (budget.eps**2 - delta.flatten(1).pow(2).sum(1)).clamp_min(0)
        patch = signs * ((held + free) / (c * s * s)).sqrt().view(-1, 1, 1, 1)
        return self.project(lq + delta * (1 - cleared) + patch * window, lq, budget)

    @staticmethod
    def window(x, s, generator):
        """A random s x s square per image, as a (N, 1, H, W) 0/1 mask."""
        n, _, h, w = x.shape
        top = torch.randint(0, h - s + 1, (n, 1, 1, 1), generator=generator).to(x.device)
        left = torch.randint(0, w - s + 1, (n, 1, 1, 1), generator=generator).to(x.device)
        rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
        return ((rows >= top) & (rows < top + s) & (cols >= left) & (cols < left + s)).float()

    @staticmethod
    def signs(shape, generator, device):
        return (torch.randint(0, 2, shape, generator=generator).float() * 2 - 1).to(device)


@hookimpl
def register_attacks(register):
    register(Square)
