"""pretrained: any restoration checkpoint whose architecture spandrel recognises.

spandrel (the chaiNNer team's architecture library, also used by ComfyUI) detects the
architecture from the state dict's keys and shapes and builds the module; this plugin reads the
file itself (``torch.load(weights_only=True)`` or safetensors, never spandrel's own unpickler),
so a checkpoint runs no code. spandrel declares torchvision, but only its LaMa (inpainting) and
RestoreFormer (faces) import from it; beside a CPU torch build PyPI's torchvision does not import,
so spandrel is installed without it and those two functions are stand-ins that raise.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import field_validator
from torch import nn

from arena.api import Field, Params, Restorer
from arena.hookspecs import hookimpl

#: the only torchvision names spandrel 0.4 imports (LaMa, RestoreFormer)
_TORCHVISION_NAMES = ("rotate", "normalize")


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    def missing(*args, **kwargs):
        raise RuntimeError("this architecture needs torchvision, which does not import beside this torch build")

    class InterpolationMode:  # an enum in torchvision; LaMa only names members as defaults
        NEAREST, BILINEAR, BICUBIC = "nearest", "bilinear", "bicubic"

    functional = types.ModuleType("torchvision.transforms.functional")
    functional.__dict__.update({n: missing for n in _TORCHVISION_NAMES}, InterpolationMode=InterpolationMode)
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    root = types.ModuleType("torchvision")
    root.transforms = transforms
    return {"torchvision": root, "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional}


def import_spandrel():
    """spandrel, importable with or without a working torchvision. The stand-in is in
    ``sys.modules`` only while spandrel imports, so no other library mistakes it for the real one."""
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    try:
        importlib.import_module("torchvision")
        return importlib.import_module("spandrel")
    except Exception:  # absent, or PyPI's build beside a CPU torch (RuntimeError on import)
        pass
    stand_in = _torchvision_stand_in()
    saved = {k: sys.modules.get(k) for k in stand_in}
    sys.modules.update(stand_in)
    try:
        return importlib.import_module("spandrel")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def missing() -> str | None:
    try:
        import_spandrel()
    except ImportError as exc:
        return f"needs spandrel and einops (pip install 'udc-arena[pretrained]'): {exc}"
    return None


class Pretrained(nn.Module):
    """The detected network, with its input padded (replicate) to the sizes it accepts."""

    def __init__(self, descriptor):
        super().__init__()
        self.net = descriptor.model
        self.architecture = descriptor.architecture.id
        self.size = descriptor.size_requirements

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        h, w = lq.shape[-2:]
        m, least = self.size.multiple_of, self.size.minimum
        H, W = max(h + (-h) % m, least), max(w + (-w) % m, least)
        if self.size.square:
            H = W = max(H, W)
        x = F.pad(lq, (0, W - w, 0, H - h), mode="replicate") if (H, W) != (h, w) else lq
        return self.net(x)[..., :h, :w]


class PretrainedRestorer(Restorer):
    """A published architecture from its checkpoint, detected by spandrel (chaiNNer, 2023-)."""

    name = "pretrained"
    needs_psf = False

    class Params(Params):
        weights: str = Field(description="checkpoint: .pth/.pt/.ckpt (read with weights_only=True) "
                             "or .safetensors")
        tile: int | None = Field(None, ge=0, le=16384, description="tile side for large images "
                                 "(0: never; unset: from the memory budget, arena.tiling)")
        overlap: int = Field(32, ge=0, le=1024, description="pixels neighbouring tiles blend")

        @field_validator("weights")
        @classmethod
        def _exists(cls, v):
            path = Path(v).expanduser().resolve()
            if not path.is_file():
                raise ValueError(f"no such file {path}")
            return str(path)

    def enter_state(self, state, where):
        spandrel = import_spandrel()
        from arena.weights import WeightsError

        try:
            descriptor = spandrel.ModelLoader().load_from_state_dict(state)
        except spandrel.UnsupportedModelError:
            keys = sorted(state)[:4]
            raise WeightsError(f"{where}: spandrel {spandrel.__version__} recognises no architecture "
                               f"in these {len(state)} tensors (first keys {keys})") from None
        except (RuntimeError, KeyError, ValueError) as exc:  # detected, but the tensors do not fit
            raise WeightsError(f"{where}: spandrel could not load it: {str(exc).splitlines()[0]}") from None
        if descriptor.input_channels != 3 or descriptor.output_channels != 3 or descriptor.scale != 1:
            raise WeightsError(f"{where}: {descriptor.architecture.id} maps {descriptor.input_channels} to "
                               f"{descriptor.output_channels} channels at scale {descriptor.scale}; a UDC "
                               "restorer maps RGB to RGB at scale 1")
        model = Pretrained(descriptor)
        return model, model.net.state_dict(), model.architecture

    def build(self) -> nn.Module:
        from arena.checkpoint import read_checkpoint
        from arena.weights import load_state

        path = Path(self.params.weights)
        # an imported file is checked against its manifest's hash; a raw checkpoint is read as is
        state = load_state(path) if path.with_suffix(".json").exists() else read_checkpoint(path)
        return self.enter_state(state, str(path))[0]

    def load(self, device="cpu", weights=None):
        if weights is not None:  # hardened weights of the same architecture
            return super().load(device, weights)
        return self.ready(self.build(), device)

    def weights_file(self):
        return self.params.weights


@hookimpl
def register_restorers(register):
    register(PretrainedRestorer, unavailable=missing())
