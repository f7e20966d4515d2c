"""Median filtering of the input, through ART's SpatialSmoothing, with BPDA for gradients."""

from arena.api import Defense, Field, Params
from arena.hookspecs import hookimpl
from arena_plugins.defenses.common import through_numpy


class Median(Defense):
    """Median smoothing, from feature squeezing (Xu et al., NDSS 2018)."""

    name = "median"
    gradient = "bpda"  # the median's gradient is a selection: zero almost everywhere

    class Params(Params):
        window: int = Field(3, ge=2, le=15, description="side of the square median window")

    def purify(self, x, generator):
        from art.defences.preprocessor import SpatialSmoothing  # ART is slow to import: only when used

        # The numpy class: SpatialSmoothingPyTorch needs kornia, which the arena does not ship.
        smooth = SpatialSmoothing(window_size=self.params.window, channels_first=True,
                                  clip_values=(0.0, 1.0))
        return through_numpy(lambda a: smooth(a)[0], x)


@hookimpl
def register_defenses(register):
    register(Median)
