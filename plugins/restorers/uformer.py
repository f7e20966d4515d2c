"""Uformer: a U-shaped transformer of LeWin blocks (window attention + locally-enhanced MLP)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from arena.api import Field, Params, Restorer
from arena.hookspecs import hookimpl
from arena_plugins.restorers.common import ResidualRestorer, zero_init


def to_windows(x: torch.Tensor, win: int) -> torch.Tensor:
    """(N, H, W, C) -> (N * windows, win * win, C)."""
    n, h, w, c = x.shape
    x = x.view(n, h // win, win, w // win, win, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, win * win, c)


def from_windows(x: torch.Tensor, win: int, n: int, h: int, w: int) -> torch.Tensor:
    """Inverse of ``to_windows``."""
    c = x.shape[-1]
    x = x.view(n, h // win, w // win, win, win, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h, w, c)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows, with relative position bias."""

    def __init__(self, dim: int, heads: int, win: int):
        super().__init__()
        self.heads, self.win = heads, win
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * win - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(win), torch.arange(win), indexing="ij"))
        rel = (coords.flatten(1)[:, :, None] - coords.flatten(1)[:, None, :]) + (win - 1)
        # A derived index, not a weight: kept out of the state dict.
        self.register_buffer("bias_index", rel[0] * (2 * win - 1) + rel[1], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.bias_table[self.bias_index.view(-1)].view(t, t, -1).permute(2, 0, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0))
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


class LeFF(nn.Module):
    """Locally-enhanced feed-forward: linear, 3x3 depthwise convolution, linear."""

    def __init__(self, dim: int, ratio: int = 4):
        super().__init__()
        hidden = dim * ratio
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, H, W, C)
        # The tanh form of GELU: same curve to 1e-3, a third cheaper on CPU.
        x = F.gelu(self.fc1(x), approximate="tanh")
        x = F.gelu(self.dwconv(x.permute(0, 3, 1, 2)), approximate="tanh").permute(0, 2, 3, 1)
        return self.fc2(x)


class LeWinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, win: int, ratio: int = 4):
        super().__init__()
        self.win = win
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, win)
        self.norm2 = nn.LayerNorm(dim)
        self.leff = LeFF(dim, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, H, W, C)
        n, h, w, _ = x.shape
        x = x + from_windows(self.attn(to_windows(self.norm1(x), self.win)), self.win, n, h, w)
        return x + self.leff(self.norm2(x))


class Stage(nn.Module):
    """LeWin blocks on an (N, C, H, W) map."""

    def __init__(self, dim: int, depth: int, heads: int, win: int, ratio: int):
        super().__init__()
        self.blocks = nn.Sequential(*(LeWinBlock(dim, heads, win, ratio) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class UformerModule(ResidualRestorer):
    def __init__(self, dim: int = 16, levels: int = 3, depth: int = 1, win: int = 8,
                 ratio: int = 2, head_dim: int = 16):
        super().__init__()
        self.multiple = win * 2**levels
        self.intro = nn.Sequential(nn.Conv2d(3, dim, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))
        dims = [dim * 2**i for i in range(levels + 1)]
        heads = [max(1, d // head_dim) for d in dims]
        self.encoders = nn.ModuleList(Stage(dims[i], depth, heads[i], win, ratio)
                                      for i in range(levels))
        # Uformer's downsampling: a 4x4 stride-2 convolution doubling the channels.
        self.downs = nn.ModuleList(nn.Conv2d(dims[i], dims[i + 1], 4, 2, 1) for i in range(levels))
        self.bottleneck = Stage(dims[-1], depth, heads[-1], win, ratio)
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        up_in = dims[-1]
        for i in reversed(range(levels)):
            self.ups.append(nn.ConvTranspose2d(up_in, dims[i], 2, stride=2))
            # Decoder stages work on the concatenation [upsampled, skip]: twice the channels.
            self.decoders.append(Stage(2 * dims[i], depth, heads[i + 1], win, ratio))
            up_in = 2 * dims[i]
        self.outro = zero_init(nn.Conv2d(2 * dim, 3, 3, padding=1))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        x = self.intro(x)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            x = enc(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for up, dec in zip(self.ups, self.decoders):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.outro(x)


class Uformer(Restorer):
    """Uformer of Wang et al., "Uformer: A General U-Shaped Transformer for Image Restoration", CVPR 2022."""

    name = "uformer"
    needs_psf = False
    weights = Path(__file__).parent / "weights" / "uformer.safetensors"
    channels_last = True  # 1.2-1.3x faster forward+backward on CPU (bench_restorers.py)

    class Params(Params):
        dim: int = Field(16, ge=8, le=64, description="embedding channels at full resolution")
        levels: int = Field(3, ge=1, le=4, description="downsamplings")
        depth: int = Field(1, ge=1, le=4, description="LeWin blocks per stage")
        window: int = Field(8, ge=2, le=16, description="attention window side (pixels)")
        mlp_ratio: int = Field(2, ge=1, le=4, description="LeFF hidden channels per input channel")

    def build(self) -> nn.Module:
        p = self.params
        return UformerModule(p.dim, p.levels, p.depth, p.window, p.mlp_ratio)


@hookimpl
def register_restorers(register):
    register(Uformer)
