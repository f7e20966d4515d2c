"""Random-noise floor: uniform draws from the budget's ball, the worst one kept per image."""

import torch

from arena.api import Attack, AttackParams, Field
from arena.hookspecs import hookimpl


class Noise(Attack):
    """Uniform noise in the budget's ball: the floor (Carlini et al., arXiv 1902.06705, 2019).

    With ``draws`` > 1 each draw costs one query of the defended system (counted against the
    budget) and the most damaging draw is kept per image: a worst-of-k floor, the same
    per-image worst case the leaderboard applies across attacks. ``draws = 1`` makes no query.
    """

    name = "noise"
    kind = "decision-free"

    class Params(AttackParams):
        draws: int = Field(8, ge=1, le=100_000, description="draws (at most the query budget)")

    def perturb(self, target, lq, hq, budget, generator):
        draws = min(self.params.draws, budget.queries)
        if draws == 1:
            return self.random_start(lq, budget, generator)
        best, best_loss = lq, torch.full((lq.shape[0],), -torch.inf, device=lq.device)
        for _ in range(draws):
            x = self.random_start(lq, budget, generator)
            best, best_loss = self.keep_best(best, best_loss, x, target.query(x, hq))
        return best


@hookimpl
def register_attacks(register):
    register(Noise)
