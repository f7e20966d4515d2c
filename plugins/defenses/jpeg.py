"""JPEG compression of the input, through ART's JpegCompression, with BPDA for gradients."""

import numpy as np
import torch

from arena.api import Defense, Field, Params
from arena.hookspecs import hookimpl


class JPEG(Defense):
    """JPEG compression as an input defense (Dziugaite et al. 2016; Guo et al., ICLR 2018)."""

    name = "jpeg"
    gradient = "bpda"  # JPEG quantisation has zero gradient almost everywhere

    class Params(Params):
        quality: int = Field(75, ge=1, le=95, description="JPEG quality factor")

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        from art.defences.preprocessor import JpegCompression  # ART is slow to import: only when used

        jpeg = JpegCompression(clip_values=(0.0, 1.0), quality=self.params.quality,
                               channels_first=True, apply_predict=True)
        out, _ = jpeg(x.detach().cpu().numpy().astype(np.float32))
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(x.device)


@hookimpl
def register_defenses(register):
    register(JPEG)
