"""ART cross-check: ART's own FGSM and PGD, driven through its PyTorchRegressor."""

from typing import Literal

import numpy as np
import torch

from arena.api import Attack, AttackParams, Field
from arena.hookspecs import hookimpl
from arena.threat import objective_loss


class _Forward(torch.nn.Module):
    """The Target's differentiable forward as the nn.Module ART's estimators expect."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def forward(self, x):
        return self.target.forward(x)


class _ImageLoss(torch.nn.modules.loss._Loss):
    """The match's objective for ART. PyTorchRegressor flattens the whole batch's output before
    calling its loss, so the image shape comes back from the explicit y. ART's regression
    attacks call it once per gradient, so it keeps the target's convergence record."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def forward(self, out, y):
        loss = objective_loss(self.target.objective, out.reshape(y.shape), y)
        self.target.gradient_calls += 1
        self.target.record(loss)
        return loss.sum()


class ART(Attack):
    """ART's FGSM and PGD (Nicolae et al., "Adversarial Robustness Toolbox v1.0", 2018).

    A cross-check of the arena's own FGSM and PGD: the ground truth (the clean output under
    mse_clean) is passed as explicit y, because without it ART attacks the model's own output
    and the gradient is zero; no random init, which ART refuses for regressors.
    """

    name = "art"

    class Params(AttackParams):
        method: Literal["fgsm", "pgd"] = Field("pgd", description="which ART attack runs")
        step: float = Field(2.5, gt=0, le=100, description="pgd: step as a multiple of eps/steps")

    def perturb(self, target, lq, hq, budget, generator):
        from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
        from art.estimators.regression import PyTorchRegressor

        estimator = PyTorchRegressor(
            _Forward(target), _ImageLoss(target), input_shape=tuple(lq.shape[1:]),
            clip_values=(0.0, 1.0), device_type="gpu" if lq.is_cuda else "cpu")
        common = dict(norm=np.inf if budget.norm == "linf" else 2, eps=budget.eps,
                      num_random_init=0, batch_size=lq.shape[0])
        if self.params.method == "fgsm":
            attack = FastGradientMethod(estimator, eps_step=budget.eps, **common)
        else:
            attack = ProjectedGradientDescent(
                estimator, eps_step=self.params.step * budget.eps / budget.steps,
                max_iter=budget.steps, verbose=False, **common)
        y = target.reference(hq).cpu().numpy()
        x_adv = attack.generate(x=lq.detach().cpu().numpy(), y=y)
        return torch.from_numpy(x_adv).to(lq.device, torch.float32)


@hookimpl
def register_attacks(register):
    register(ART)
