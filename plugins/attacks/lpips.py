"""LPIPS attack: PGD on the learned perceptual distance between the output and the reference."""

import importlib.util
from pathlib import Path
from typing import Literal

import torch

from arena.api import Field
from arena.hookspecs import hookimpl
from arena_plugins.attacks.pgd import PGD

#: torchvision checkpoints LPIPS builds its backbone from (it downloads them on first use).
BACKBONES = {"alex": "alexnet-owt-*.pth", "vgg": "vgg16-*.pth", "squeeze": "squeezenet1_1-*.pth"}


def missing(net: str = "alex") -> str | None:
    """Why the LPIPS attack cannot run here, or None. Looks, never imports or downloads."""
    if importlib.util.find_spec("lpips") is None:
        return "the 'lpips' package is not installed (pip install lpips)"
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if not any(checkpoints.glob(BACKBONES[net])):
        return (f"LPIPS needs torchvision's pretrained {net} weights in {checkpoints}; "
                "this machine has none and the arena never downloads during a match")
    return None


class LPIPSAttack(PGD):
    """PGD (Madry et al., ICLR 2018) maximising LPIPS (Zhang et al., CVPR 2018).

    The distance is to the objective's reference (the ground truth, or the clean output under
    mse_clean); iterates are ranked by LPIPS too.
    """

    name = "lpips"

    class Params(PGD.Params):
        net: Literal["alex", "vgg", "squeeze"] = Field("alex", description="LPIPS backbone")

    def metric(self, device):
        if getattr(self, "_metric", None) is None:
            import lpips

            metric = lpips.LPIPS(net=self.params.net, verbose=False)
            self._metric = metric.eval().requires_grad_(False)
        return self._metric.to(device)

    def distance(self, out, ref):
        d = self.metric(out.device)(out * 2 - 1, ref * 2 - 1)  # LPIPS takes [-1, 1]
        d = d.flatten(1).mean(1)
        return d, d

    def gradient(self, target, x, hq):
        return target.loss_grad(x, hq, steer=self.distance)

    def score(self, target, x, hq):
        with torch.no_grad():
            ref = target.reference(hq)
            draws = [self.distance(target.forward(x), ref)[0] for _ in range(target.eot)]
            return sum(draws) / target.eot


@hookimpl
def register_attacks(register):
    register(LPIPSAttack, unavailable=missing())
