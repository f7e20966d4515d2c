"""UDC-UNet: a residual U-Net whose features a condition branch modulates pixel by pixel."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from arena.api import Field, Params, Restorer
from arena.hookspecs import hookimpl
from arena_plugins.restorers.common import ResBlock, ResidualRestorer, conv_act, zero_init


class Modulation(nn.Module):
    """Spatially-variant affine modulation: x * (1 + scale(cond)) + shift(cond)."""

    def __init__(self, cond: int, c: int):
        super().__init__()
        # Zero init: modulation starts as the identity and the base U-Net trains as usual.
        self.scale = zero_init(nn.Conv2d(cond, c, 1))
        self.shift = zero_init(nn.Conv2d(cond, c, 1))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return x * (1 + self.scale(cond)) + self.shift(cond)


class UDCUNetModule(ResidualRestorer):
    def __init__(self, width: int = 16, levels: int = 3, blocks: int = 1, middle_blocks: int = 2):
        super().__init__()
        self.multiple = 2**levels
        chans = [width * 2**i for i in range(levels + 1)]
        self.head = conv_act(3, width)
        # The condition branch reads the degraded image and produces one map per scale: where
        # the flare and saturation are, which the base network's filters cannot see locally.
        self.cond_head = conv_act(3, width)
        self.cond_downs = nn.ModuleList(conv_act(chans[i], chans[i + 1], 2) for i in range(levels))
        self.enc = nn.ModuleList(nn.Sequential(*(ResBlock(c) for _ in range(blocks)))
                                 for c in chans[:-1])
        self.enc_mod = nn.ModuleList(Modulation(c, c) for c in chans[:-1])
        self.downs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 2, stride=2)
                                   for i in range(levels))
        self.middle = nn.Sequential(*(ResBlock(chans[-1]) for _ in range(middle_blocks)))
        self.middle_mod = Modulation(chans[-1], chans[-1])
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chans[i + 1], 4 * chans[i], 1), nn.PixelShuffle(2))
            for i in reversed(range(levels))
        )
        self.dec = nn.ModuleList(nn.Sequential(*(ResBlock(c) for _ in range(blocks)))
                                 for c in reversed(chans[:-1]))
        self.dec_mod = nn.ModuleList(Modulation(c, c) for c in reversed(chans[:-1]))
        self.tail = zero_init(nn.Conv2d(width, 3, 3, padding=1))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        conds = [self.cond_head(x)]
        for down in self.cond_downs:
            conds.append(down(conds[-1]))
        f, skips = self.head(x), []
        for enc, mod, down, cond in zip(self.enc, self.enc_mod, self.downs, conds):
            f = mod(enc(f), cond)
            skips.append(f)
            f = down(f)
        f = self.middle_mod(self.middle(f), conds[-1])
        for up, dec, mod, cond in zip(self.ups, self.dec, self.dec_mod, reversed(conds[:-1])):
            f = mod(dec(up(f) + skips.pop()), cond)
        return self.tail(f)


class UDCUNet(Restorer):
    """UDC-UNet of Liu et al., "UDC-UNet: Under-Display Camera Image Restoration via U-Shape Dynamic Network", ECCV Workshops 2022 (condition branch, no kernel branch)."""

    name = "udcunet"
    needs_psf = False
    weights = Path(__file__).parent / "weights" / "udcunet.safetensors"
    channels_last = True  # 1.2-1.3x faster forward+backward on CPU (bench_restorers.py)

    class Params(Params):
        width: int = Field(16, ge=4, le=64, description="channels at full resolution")
        levels: int = Field(3, ge=1, le=4, description="downsamplings")
        blocks: int = Field(1, ge=1, le=4, description="residual blocks per encoder/decoder level")
        middle_blocks: int = Field(2, ge=1, le=8,
                                   description="residual blocks at the lowest resolution")

    def build(self) -> nn.Module:
        p = self.params
        return UDCUNetModule(p.width, p.levels, p.blocks, p.middle_blocks)


@hookimpl
def register_restorers(register):
    register(UDCUNet)
