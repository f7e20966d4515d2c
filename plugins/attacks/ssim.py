"""SSIM attack: PGD whose objective is fixed to 1 - SSIM, the structural damage."""

from typing import Literal

from arena.api import Field
from arena.hookspecs import hookimpl
from arena_plugins.attacks.pgd import PGD


class SSIMAttack(PGD):
    """PGD (Madry et al., ICLR 2018) maximising 1 - SSIM (Wang et al., IEEE TIP 2004)."""

    name = "ssim"

    class Params(PGD.Params):
        objective: Literal["ssim"] = Field("ssim", description="fixed: 1 - ssim to ground truth")


@hookimpl
def register_attacks(register):
    register(SSIMAttack)
