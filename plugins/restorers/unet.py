"""UNet: the encoder-decoder baseline for under-display cameras, in a lite width."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from arena.api import Field, Params, Restorer
from arena.hookspecs import hookimpl
from arena_plugins.restorers.common import ResidualRestorer, zero_init


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
    )


class UNetModule(ResidualRestorer):
    """Double 3x3 convolutions per level, max-pool down, transposed-conv up, concatenated skips."""

    def __init__(self, width: int = 16, levels: int = 4):
        super().__init__()
        self.multiple = 2 ** (levels - 1)
        chans = [width * 2**i for i in range(levels)]
        self.enc = nn.ModuleList()
        cin = 3
        for c in chans:
            self.enc.append(double_conv(cin, c))
            cin = c
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(c * 2, c, 2, stride=2) for c in chans[:-1])
        self.dec = nn.ModuleList(double_conv(c * 2, c) for c in chans[:-1])
        self.out = zero_init(nn.Conv2d(width, 3, 1))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(reversed(self.up), reversed(self.dec)):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.out(x)


class UNet(Restorer):
    """UNet baseline of Zhou et al., "Image Restoration for Under-Display Camera", CVPR 2021."""

    name = "unet"
    needs_psf = False
    weights = Path(__file__).parent / "weights" / "unet.safetensors"
    channels_last = True  # 1.2-1.3x faster forward+backward on CPU (bench_restorers.py)

    class Params(Params):
        width: int = Field(16, ge=4, le=64, description="channels at full resolution")
        levels: int = Field(4, ge=2, le=5, description="resolution levels (levels-1 poolings)")

    def build(self) -> nn.Module:
        return UNetModule(self.params.width, self.params.levels)


@hookimpl
def register_restorers(register):
    register(UNet)
