"""CosPGD: PGD on a per-pixel loss weighted by how close each pixel still is to the reference."""

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure

from arena.api import Field
from arena.hookspecs import hookimpl
from arena.metrics import ssim_window
from arena_plugins.attacks.pgd import PGD, objective


def pixel_loss(name: str, out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The objective before its mean over pixels, (N, 3, H, W); its mean is the per-image loss."""
    if name in ("mse", "mse_clean"):
        return (out - ref).pow(2)
    if name == "l1":
        return (out - ref).abs()
    _, full = structural_similarity_index_measure(
        out, ref, data_range=1.0, reduction="none", return_full_image=True, **ssim_window(out.shape))
    return 1.0 - full


class CosPGD(PGD):
    """CosPGD, cosine-weighted pixel-wise PGD (Agnihotri, Jung & Keuper, ICML 2024).

    As in the authors' regression setting, the weight of a pixel is the cosine similarity of the
    channel-softmax of output and reference there (detached), so the step concentrates on pixels
    not yet damaged. On [0, 1] images a softmax over three channels is flat; ``temperature`` < 1
    sharpens it. Iterates are ranked by the match's objective, not the weighted loss.
    """

    name = "cospgd"

    class Params(PGD.Params):
        temperature: float = Field(1.0, gt=0, le=100, description="softmax temperature")

    def gradient(self, target, x, hq):
        rank, t = objective(target), self.params.temperature

        def steer(out, ref):
            w = F.cosine_similarity((out / t).softmax(1), (ref / t).softmax(1), dim=1).detach()
            drive = (w.unsqueeze(1) * pixel_loss(target.objective, out, ref)).flatten(1).mean(1)
            return rank(out, ref), drive

        return target.loss_grad(x, hq, steer=steer)


@hookimpl
def register_attacks(register):
    register(CosPGD)
