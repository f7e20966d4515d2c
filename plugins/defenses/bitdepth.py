"""Bit-depth reduction of the input, through ART's FeatureSqueezing, with BPDA for gradients."""

from arena.api import Defense, Field, Params
from arena.hookspecs import hookimpl
from arena_plugins.defenses.common import through_numpy


class BitDepth(Defense):
    """Bit-depth reduction, from feature squeezing (Xu et al., NDSS 2018)."""

    name = "bitdepth"
    gradient = "bpda"  # rounding has zero gradient almost everywhere

    class Params(Params):
        bits: int = Field(5, ge=1, le=16, description="bits per channel kept")

    def purify(self, x, generator):
        from art.defences.preprocessor import FeatureSqueezing  # ART is slow to import: only when used

        squeeze = FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=self.params.bits)
        return through_numpy(lambda a: squeeze(a)[0], x)  # ART returns float64; cast back


@hookimpl
def register_defenses(register):
    register(BitDepth)
