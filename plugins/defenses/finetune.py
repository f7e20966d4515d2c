"""Fine-tuning the restorer on diffusion-purified training inputs (the study's second stage)."""

from __future__ import annotations

from typing import Annotated

import torch

from arena.api import Defense, Field, run_restorer
from arena.hookspecs import hookimpl
from arena_plugins.defenses.common import FineTuneParams, fine_tune, reconstruction_loss
from arena_plugins.defenses.diffpure import SAMPLER_HELP, PurifierSettings, Sampler

NoiseLevel = Annotated[float, Field(ge=0, le=0.5)]


class FineTune(Defense):
    """Fine-tuning on diffusion-purified inputs (Song et al., arXiv 2402.13629, second stage).

    Each step purifies a batch of training inputs at one of ``t_stars`` (0 means unpurified),
    with the project's diffusion purifier, and fits the restorer's output on it to the ground
    truth with L1 + ``ssim_weight`` (1 - SSIM); Adam, cosine learning rate. There is no
    perceptual (VGG) term: it would need weights from a model hub. Alone it is the ablation;
    the study's defense is the chain ``diffpure>finetune`` (this link hardens the weights, the
    diffpure link purifies inputs at evaluation; their purifier settings are set separately).
    """

    name = "finetune"
    hardens = True

    class Params(FineTuneParams, PurifierSettings):
        t_stars: tuple[NoiseLevel, ...] = Field(
            (0.05, 0.1, 0.15), min_length=1, description="purification noise levels, one drawn per step")
        sampler: Sampler = Field("ddim", description=SAMPLER_HELP)
        purify_steps: int | None = Field(
            5, ge=1, le=1000, description="reverse steps per purification (None: sampler default)")

    def harden(self, restorer, model, data, generator):
        p = self.params
        self.history: list[float] = []

        def loss(net, lq, hq, code):
            k = int(torch.randint(0, len(p.t_stars), (1,), generator=generator))
            if p.t_stars[k] > 0:
                with torch.no_grad():
                    lq = p.run(lq, p.t_stars[k], p.sampler, p.purify_steps, generator)
            return reconstruction_loss(run_restorer(net, lq, code, restorer.needs_psf), hq, p.ssim_weight)

        return fine_tune(restorer, model, data, generator, steps=p.steps, lr=p.lr, batch=p.batch,
                         loss=loss, desc="finetune", history=self.history)


@hookimpl
def register_defenses(register):
    register(FineTune)
