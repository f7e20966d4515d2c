"""Additive Gaussian noise on the input: a random, differentiable transform."""

import torch

from arena.api import Defense, Field, Params
from arena.hookspecs import hookimpl


class Noise(Defense):
    """Gaussian noise injection, as in randomized smoothing (Cohen et al., ICML 2019)."""

    name = "noise"
    gradient = "exact"
    random = True

    class Params(Params):
        sigma: float = Field(0.03, gt=0, le=1, description="noise standard deviation, [0,1] units")

    def purify(self, x, generator):
        z = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
        return (x + self.params.sigma * z).clamp(0, 1)


@hookimpl
def register_defenses(register):
    register(Noise)
