"""Pieces the restorer zoo shares: size-agnostic padding, a channel LayerNorm, a residual wrapper.

Not a plugin (it registers nothing); the zoo's modules import it as
``arena_plugins.restorers.common``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right so H and W are multiples of ``multiple``.

    Replicate padding: unlike reflection it is defined for any pad width, so a 16 px image
    can be padded to 64.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of an (N, C, H, W) map."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        x = (x - mu) * torch.rsqrt(var + self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class ResidualRestorer(nn.Module):
    """Base module: pad to the network's multiple, add the predicted residual, crop back.

    Subclasses set ``multiple`` and implement ``residual(x, *cond)`` on the padded batch.
    """

    multiple: int = 1

    def residual(self, x: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, lq: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        if lq.ndim != 4 or lq.shape[1] != 3:
            raise ValueError(f"expected lq of shape (N, 3, H, W), got {tuple(lq.shape)}")
        h, w = lq.shape[-2:]
        x = pad_to_multiple(lq, self.multiple)
        return (x + self.residual(x, *cond))[..., :h, :w]


class ResBlock(nn.Module):
    """conv-LeakyReLU-conv with an identity skip (EDSR/BasicSR style, no normalisation)."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c, c, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def conv_act(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """A 3x3 convolution followed by LeakyReLU(0.2)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
                         nn.LeakyReLU(0.2, inplace=True))


def zero_init(layer: nn.Module) -> nn.Module:
    """Zero a layer's weights and bias, so a residual network starts as the identity."""
    nn.init.zeros_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
