"""SignHunter: a black-box attack that searches the signs of an eps-sized perturbation."""

import math

import torch

from arena.api import Attack
from arena.hookspecs import hookimpl


class SignHunter(Attack):
    """SignHunter (Al-Dujaili & O'Reilly, "Sign Bits Are All You Need for Black-Box Attacks", ICLR 2020).

    The perturbation is eps times a sign vector (scaled to norm eps under L2). Starting from all
    +1, the attack flips contiguous chunks of signs, halving the chunk length each time a pass
    over the image ends, and keeps a flip, per image, when the queried loss goes up. It only
    uses ``target.query``, one query per candidate, and stops at the budget's query limit.
    """

    name = "signhunter"
    kind = "score-based"

    def perturb(self, target, lq, hq, budget, generator):
        n, d = len(lq), lq[0].numel()
        scale = budget.eps if budget.norm == "linf" else budget.eps / math.sqrt(d)
        signs = torch.ones(n, d, device=lq.device)

        def candidate(s):
            return self.project(lq + scale * s.view_as(lq), lq, budget)

        best = target.query(candidate(signs), hq)
        size, start = d, 0
        for _ in range(budget.queries - 1):
            trial = signs.clone()
            trial[:, start:start + size] *= -1
            loss = target.query(candidate(trial), hq)
            better = loss > best
            signs = torch.where(better[:, None], trial, signs)
            best = torch.where(better, loss, best)
            start += size
            if start >= d:  # a pass is over: halve the chunks, back to whole-image chunks after single signs
                size, start = (math.ceil(size / 2) if size > 1 else d), 0
        return candidate(signs)


@hookimpl
def register_attacks(register):
    register(SignHunter)
