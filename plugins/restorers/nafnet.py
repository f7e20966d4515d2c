"""NAFNet: a nonlinear-activation-free U-shaped restorer, in a lite width."""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from arena.api import Field, Params, Restorer
from arena.hookspecs import hookimpl
from arena_plugins.restorers.common import LayerNorm2d, ResidualRestorer, zero_init


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them: the network's only nonlinearity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class LocalAvgPool(nn.Module):
    """TLC's test-time stand-in for the global average (Chu et al., "Improving Image Restoration
    by Revisiting Global Information Aggregation", ECCV 2022): each pixel gets the mean of the
    ``window`` x ``window`` neighbourhood around it, the border pixels that of the nearest whole
    window (their code's ``auto_pad``), the global mean where the map fits in one window."""

    def __init__(self, window: int):
        super().__init__()
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        kh, kw = min(h, self.window), min(w, self.window)
        if (kh, kw) == (h, w):
            return F.adaptive_avg_pool2d(x, 1)
        # summed-area table in float64: window sums are differences of large running sums,
        # which float32 would round differently in a tile and in the whole image
        s = F.pad(x.double().cumsum(-1).cumsum(-2), (1, 0, 1, 0))
        out = (s[..., kh:, kw:] - s[..., :-kh, kw:] - s[..., kh:, :-kw] + s[..., :-kh, :-kw]) / (kh * kw)
        ph, pw = h - out.shape[-2], w - out.shape[-1]
        return F.pad(out.to(x.dtype), (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")


class NAFBlock(nn.Module):
    def __init__(self, c: int, expand: int = 2, window: int = 0):
        super().__init__()
        hidden = c * expand
        self.norm1 = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.gate = SimpleGate()
        # Simplified channel attention: a global average (or TLC's local one, ``window`` > 0)
        # and one linear map, no sigmoid.
        pool = LocalAvgPool(window) if window else nn.AdaptiveAvgPool2d(1)
        self.sca = nn.Sequential(pool, nn.Conv2d(hidden // 2, hidden // 2, 1))
        self.conv3 = nn.Conv2d(hidden // 2, c, 1)
        self.norm2 = LayerNorm2d(c)
        self.conv4 = nn.Conv2d(c, hidden, 1)
        self.conv5 = nn.Conv2d(hidden // 2, c, 1)
        # Zero-initialised branch scales: every block starts as the identity.
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.gate(self.dwconv(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta
        x = self.conv5(self.gate(self.conv4(self.norm2(y))))
        return y + x * self.gamma


class NAFNetModule(ResidualRestorer):
    def __init__(self, width: int = 16, enc_blocks=(1, 1, 1), middle_blocks: int = 2,
                 dec_blocks=(1, 1, 1), window: int = 0):
        """``window``: TLC's pooling window in input pixels (0: global pooling); a level at
        stride s pools over ``window // s`` of its own pixels, the same stretch of the image."""
        super().__init__()
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError("enc_blocks and dec_blocks need one entry per level")
        self.multiple = 2 ** len(enc_blocks)

        def block(c, level):
            return NAFBlock(c, window=max(1, window >> level) if window else 0)

        self.intro = nn.Conv2d(3, width, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        c, level = width, 0
        for n in enc_blocks:
            self.encoders.append(nn.Sequential(*(block(c, level) for _ in range(n))))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c, level = c * 2, level + 1
        self.middle = nn.Sequential(*(block(c, level) for _ in range(middle_blocks)))
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for n in dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c, level = c // 2, level - 1
            self.decoders.append(nn.Sequential(*(block(c, level) for _ in range(n))))
        self.ending = zero_init(nn.Conv2d(width, 3, 3, padding=1))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        x = self.intro(x)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            x = enc(x)
            skips.append(x)
            x = down(x)
        x = self.middle(x)
        for up, dec in zip(self.ups, self.decoders):
            x = dec(up(x) + skips.pop())
        return self.ending(x)


class NAFNet(Restorer):
    """NAFNet of Chen et al., "Simple Baselines for Image Restoration", ECCV 2022 (lite width)."""

    name = "nafnet"
    needs_psf = False
    weights = Path(__file__).parent / "weights" / "nafnet.safetensors"

    class Params(Params):
        width: int = Field(16, ge=4, le=64, description="channels at full resolution")
        levels: int = Field(3, ge=1, le=4, description="downsamplings, one block per level")
        middle_blocks: int = Field(2, ge=1, le=12, description="blocks at the lowest resolution")
        tlc_window: int = Field(
            0, ge=0, le=16384, exclude_if=lambda v: v == 0,
            description="test-time local pooling (TLC, Chu et al. ECCV 2022): the channel "
            "attention averages over this many input pixels square instead of the whole image; "
            "0: global, as trained. TLC uses 1.5x the training crop (96 for the shipped weights)")

    def build(self) -> nn.Module:
        p = self.params
        return NAFNetModule(p.width, (1,) * p.levels, p.middle_blocks, (1,) * p.levels, p.tlc_window)

    def adapt_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """BasicSR's key layout (the authors' release): ``middle_blks`` and the depthwise
        ``conv2`` are ``middle`` and ``dwconv`` here; the maths is the same. (BasicSR pads with
        zeros, this module replicates: outputs agree where H and W are multiples of 2**levels.)"""
        if not any(k.startswith("middle_blks.") for k in state):
            return state
        return {re.sub(r"\.conv2\.", ".dwconv.", re.sub(r"^middle_blks\.", "middle.", k)): v
                for k, v in state.items()}


@hookimpl
def register_restorers(register):
    register(NAFNet)
