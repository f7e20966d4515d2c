"""BIM / I-FGSM: PGD from the clean input, no random start, one run."""

import torch

from arena.api import AttackParams, Field
from arena.hookspecs import hookimpl
from arena_plugins.attacks.pgd import PGD


class BIM(PGD):
    """Basic iterative method, I-FGSM (Kurakin et al., ICLR workshop 2017)."""

    name = "bim"

    class Params(AttackParams):
        # Kurakin et al. take N = 1.25 eps steps of size 1 (in pixel units): the path is
        # 1.25 eps long, so the iterates can reach the boundary and move along it.
        step: float = Field(1.25, gt=0, le=100, description="step size as a multiple of eps/steps")

    def perturb(self, target, lq, hq, budget, generator):
        start = torch.full((lq.shape[0],), -torch.inf, device=lq.device)
        return self.climb(target, lq, lq, hq, budget, lq, start)[0]


@hookimpl
def register_attacks(register):
    register(BIM)
