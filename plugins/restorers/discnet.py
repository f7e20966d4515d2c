"""DISCNet: dynamic skip connections conditioned on the PSF's kernel code, in a lite width."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import field_validator
from torch import nn

from arena.api import Field, Params, Restorer
from arena.hookspecs import hookimpl
from arena_plugins.restorers.common import ResBlock, ResidualRestorer, zero_init


def encoder(cin: int, chans: list[int], blocks: int) -> nn.ModuleList:
    """One stage per scale: a 3x3 convolution (stride 2 below full resolution) and res blocks."""
    stages = nn.ModuleList()
    for i, c in enumerate(chans):
        stages.append(nn.Sequential(
            nn.Conv2d(cin, c, 3, stride=1 if i == 0 else 2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            *(ResBlock(c) for _ in range(blocks)),
        ))
        cin = c
    return stages


def dynamic_conv(x: torch.Tensor, filters: torch.Tensor, k: int) -> torch.Tensor:
    """Per-pixel, per-channel k x k filtering of x (N, C, H, W) by filters (N, C*k*k, H, W)."""
    n, c, h, w = x.shape
    patches = F.unfold(x, k, padding=k // 2).view(n, c, k * k, h, w)
    return (patches * filters.view(n, c, k * k, h, w)).sum(2)


class FilterGenerator(nn.Module):
    """Condition features -> one k x k filter per pixel and channel of the skip features."""

    def __init__(self, cond: int, c: int, k: int):
        super().__init__()
        self.k = k
        self.net = nn.Sequential(
            nn.Conv2d(cond, cond, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
            # Zero init: the dynamic filters start at zero, the skips as plain identities.
            zero_init(nn.Conv2d(cond, c * k * k, 1)),
        )

    def forward(self, cond: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return skip + dynamic_conv(skip, self.net(cond), self.k)


class DISCNetModule(ResidualRestorer):
    def __init__(self, width: int = 16, code_dim: int = 5, scales: int = 3, blocks: int = 1,
                 kernel: int = 3):
        super().__init__()
        self.multiple = 2 ** (scales - 1)
        self.code_dim = code_dim
        chans = [width * 2**i for i in range(scales)]
        self.main = encoder(3, chans, blocks)
        # The condition encoder sees the image and the kernel code stretched to a map, so the
        # filters it generates vary over the image as the PSF's effect does (saturation, flare).
        self.cond = encoder(3 + code_dim, chans, 1)
        self.filters = nn.ModuleList(FilterGenerator(c, c, kernel) for c in chans)
        self.middle = nn.Sequential(*(ResBlock(chans[-1]) for _ in range(blocks)))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2)
                                 for i in reversed(range(scales - 1)))
        self.fuse = nn.ModuleList(
            nn.Sequential(nn.Conv2d(2 * chans[i], chans[i], 3, padding=1),
                          nn.LeakyReLU(0.2, inplace=True), ResBlock(chans[i]))
            for i in reversed(range(scales - 1))
        )
        self.out = zero_init(nn.Conv2d(width, 3, 3, padding=1))

    def residual(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if code.ndim != 2 or code.shape[1] != self.code_dim or code.shape[0] not in (1, n):
            raise ValueError(f"expected a kernel code of shape ({n}, {self.code_dim}), "
                             f"got {tuple(code.shape)}")
        code_map = code.to(x.dtype)[:, :, None, None].expand(n, -1, h, w)
        c, f, skips = torch.cat([x, code_map], dim=1), x, []
        for main, cond, gen in zip(self.main, self.cond, self.filters):
            f, c = main(f), cond(c)
            skips.append(gen(c, f))
        y = self.middle(skips.pop())
        for up, fuse in zip(self.ups, self.fuse):
            y = fuse(torch.cat([up(y), skips.pop()], dim=1))
        return self.out(y)


class DISCNet(Restorer):
    """DISCNet of Feng et al., "Removing Diffraction Image Artifacts in Under-Display Camera via Dynamic Skip Connection Network", CVPR 2021."""

    name = "discnet"
    needs_psf = True
    weights = Path(__file__).parent / "weights" / "discnet.safetensors"

    class Params(Params):
        width: int = Field(16, ge=4, le=64, description="channels at full resolution")
        code_dim: int = Field(5, ge=1, le=64, description="length of the PSF kernel code")
        scales: int = Field(3, ge=2, le=4, description="scales with a dynamic skip connection")
        blocks: int = Field(1, ge=1, le=4, description="residual blocks per encoder scale")
        kernel: int = Field(3, ge=1, le=7, description="dynamic filter size (odd)")

        @field_validator("kernel")
        @classmethod
        def _odd(cls, k: int) -> int:
            if k % 2 == 0:
                raise ValueError("must be odd")
            return k

    def build(self) -> nn.Module:
        p = self.params
        return DISCNetModule(p.width, p.code_dim, p.scales, p.blocks, p.kernel)


@hookimpl
def register_restorers(register):
    register(DISCNet)
