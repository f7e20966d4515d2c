"""Adversarial fine-tuning of the restorer with PGD examples (Madry et al.)."""

from __future__ import annotations

from typing import Literal

from arena.api import Defense, Field, run_restorer
from arena.hookspecs import hookimpl
from arena.threat import Budget, System, Target
from arena_plugins.attacks.pgd import PGD
from arena_plugins.defenses.common import FineTuneParams, fine_tune, reconstruction_loss


class AdvTrain(Defense):
    """PGD adversarial training (Madry et al., ICLR 2018), as fine-tuning of a trained restorer.

    Each step crafts PGD examples against the current weights (the arena's own ``pgd`` attack,
    random start, maximising ``objective``) and fits the restorer's output on them to the ground
    truth with L1 + ``ssim_weight`` (1 - SSIM), plus ``clean_weight`` times the same loss on the
    clean inputs (0 is Madry's pure min-max; the default keeps clean quality in view).
    """

    name = "advtrain"
    hardens = True

    class Params(FineTuneParams):
        norm: Literal["linf", "l2"] = Field("linf", description="norm of the training perturbations")
        eps: float = Field(8 / 255, gt=0, le=64, description="training radius, [0,1] image units")
        attack_steps: int = Field(5, ge=1, le=1000, description="PGD iterations per batch")
        step: float = Field(2.5, gt=0, le=100, description="PGD step as a multiple of eps/attack_steps")
        objective: Literal["mse", "l1", "ssim"] = Field("mse", description="loss PGD maximises")
        clean_weight: float = Field(0.5, ge=0, le=10, description="weight of the clean-input loss")

    def harden(self, restorer, model, data, generator):
        p = self.params
        budget = Budget(norm=p.norm, eps=p.eps, steps=p.attack_steps)
        pgd = PGD(PGD.Params(objective=p.objective, step=p.step))
        self.history: list[float] = []

        def loss(net, lq, hq, code):
            net.eval().requires_grad_(False)  # craft against fixed weights, gradients to x only
            target = Target(System(net, [], code), "oblivious", p.objective, generator)
            x_adv = pgd.run(target, lq, hq, budget, generator)
            net.train().requires_grad_(True)
            value = reconstruction_loss(run_restorer(net, x_adv, code, restorer.needs_psf), hq, p.ssim_weight)
            if p.clean_weight:
                clean = reconstruction_loss(run_restorer(net, lq, code, restorer.needs_psf), hq, p.ssim_weight)
                value = value + p.clean_weight * clean
            return value

        return fine_tune(restorer, model, data, generator, steps=p.steps, lr=p.lr, batch=p.batch,
                         loss=loss, desc="advtrain", history=self.history)


@hookimpl
def register_defenses(register):
    register(AdvTrain)
