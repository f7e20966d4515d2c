"""Transfer attack: PGD crafted on another restorer of the zoo, sent to the target unchanged."""

from typing import Any

from arena.api import Field
from arena.hookspecs import hookimpl
from arena_plugins.attacks.pgd import PGD


class Transfer(PGD):
    """PGD examples transferred from a surrogate model (Papernot et al., arXiv 1605.07277)."""

    name = "transfer"
    kind = "transfer"

    class Params(PGD.Params):
        surrogate: str = Field("unet", min_length=1, description="restorer of the zoo to craft on")
        surrogate_params: dict[str, Any] = Field(default_factory=dict, description="its parameters")

    def perturb(self, target, lq, hq, budget, generator):
        # a white-box target over the undefended surrogate, under the same evaluation bound
        proxy = target.surrogate(self.params.surrogate, self.params.surrogate_params or None)
        return super().perturb(proxy, lq, hq, budget, generator)


@hookimpl
def register_attacks(register):
    register(Transfer)
