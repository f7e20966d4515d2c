"""Total variance minimisation of the input, through ART's TotalVarMin, with BPDA for gradients."""

import numpy as np
import torch

from arena.api import Defense, Field, Params
from arena.hookspecs import hookimpl
from arena_plugins.defenses.common import through_numpy


class TVM(Defense):
    """Total variance minimisation (Guo et al., ICLR 2018), via ART's TotalVarMin.

    Keeps a random subset of pixels and fills in the rest by minimising total variation.
    """

    name = "tvm"
    gradient = "bpda"  # an optimiser's output: no gradient path
    random = True  # the kept pixels are a Bernoulli draw

    class Params(Params):
        prob: float = Field(0.3, gt=0, le=1, description="probability that a pixel is kept")
        lamb: float = Field(0.5, gt=0, le=100, description="weight of the total-variation term")
        norm: int = Field(2, ge=1, le=2, description="norm of the reconstruction term")
        max_iter: int = Field(10, ge=1, le=1000, description="L-BFGS-B iterations per channel")

    def purify(self, x, generator):
        from art.defences.preprocessor import TotalVarMin  # ART is slow to import: only when used

        p = self.params
        tvm = TotalVarMin(prob=p.prob, norm=p.norm, lamb=p.lamb, max_iter=p.max_iter,
                          clip_values=(0.0, 1.0))
        # ART draws the mask from numpy's global generator: seed it from ours, then put it back.
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        state = np.random.get_state()
        try:
            np.random.seed(seed)
            # TotalVarMin assumes NHWC whatever it is given: on NCHW it would smooth over the
            # wrong axes without a word.
            return through_numpy(lambda a: tvm(a)[0], x, channels_last=True)
        finally:
            np.random.set_state(state)


@hookimpl
def register_defenses(register):
    register(TVM)
