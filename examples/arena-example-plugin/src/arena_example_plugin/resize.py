"""Random resizing of the input: down by a random factor, then back to its size."""

import torch
import torch.nn.functional as F

from arena.api import Defense, Field, Params
from arena.hookspecs import hookimpl


class RandomResize(Defense):
    """Random resizing (Xie et al., "Mitigating Adversarial Effects Through Randomization", ICLR 2018).

    Each image is shrunk by a factor drawn from [min_scale, 1] and enlarged back to its size,
    both bilinearly, so the output has the input's shape (Xie et al. enlarge and pad instead,
    which suits classifiers but not a restorer whose output must align with its input).
    """

    name = "randresize"
    gradient = "exact"  # bilinear interpolation is differentiable
    random = True  # a new factor per image and call: adaptive attacks average gradients (EOT)

    class Params(Params):
        min_scale: float = Field(0.75, ge=0.25, le=1, description="smallest resizing factor drawn")

    def purify(self, x, generator):
        lo = self.params.min_scale
        scales = lo + (1 - lo) * torch.rand(len(x), generator=generator)
        return torch.cat([self.resize(img[None], float(s)) for img, s in zip(x, scales)]).clamp(0, 1)

    @staticmethod
    def resize(x, scale):
        # Keeping the exact factor (not the one implied by the rounded size) makes every draw count.
        small = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False,
                              recompute_scale_factor=False)
        return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)


@hookimpl
def register_defenses(register):
    register(RandomResize)
