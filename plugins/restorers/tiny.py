"""A tiny residual CNN, seeded, for tests and smoke runs of the arena."""

from arena.api import Field, Params, Restorer
from arena.hookspecs import hookimpl
from arena.testing import TinyNet


class Tiny(Restorer):
    """Tiny residual CNN (a DnCNN-like stack, Zhang et al. 2017), seeded init, no weights."""

    name = "tiny"

    class Params(Params):
        width: int = Field(8, ge=1, le=256, description="channels of the hidden layers")
        depth: int = Field(3, ge=2, le=20, description="number of convolutions")
        seed: int = Field(0, ge=0, description="initialisation seed")

    def build(self):
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.params.seed)
            return TinyNet(self.params.width, self.params.depth)


@hookimpl
def register_restorers(register):
    register(Tiny)
