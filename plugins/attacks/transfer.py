"""Transfer attack: PGD crafted on another restorer of the zoo, sent to the target unchanged."""

from typing import Any

import torch

from arena.api import Field
from arena.hookspecs import hookimpl
from arena.threat import Target
from arena_plugins.attacks.pgd import PGD


class Transfer(PGD):
    """PGD examples transferred from a surrogate model (Papernot et al., arXiv 1605.07277)."""

    name = "transfer"
    kind = "transfer"

    class Params(PGD.Params):
        surrogate: str = Field("unet", min_length=1, description="restorer of the zoo to craft on")
        surrogate_params: dict[str, Any] = Field(default_factory=dict, description="its parameters")

    def perturb(self, target, lq, hq, budget, generator):
        make = getattr(target, "surrogate", None)
        if make is None:
            raise RuntimeError("the transfer attack needs target.surrogate(name, params) -> "
                               "System, which the arena's worker sets")
        system = make(self.params.surrogate, self.params.surrogate_params or None)
        with torch.no_grad():  # mse_clean on the surrogate means: away from its own clean output
            clean = system.restore(lq).clamp(0, 1)
        proxy = Target(system, "oblivious", self.params.objective, generator, clean_out=clean)
        return super().perturb(proxy, lq, hq, budget, generator)


@hookimpl
def register_attacks(register):
    register(Transfer)
