"""Tiled restoration: full-resolution images through a restorer one overlapping tile at a time.

Tiles overlap by ``overlap`` pixels and are blended with a window that is zero on the outer
quarter of each inner overlap and rises as a raised cosine across the middle half, so the
weights of neighbouring tiles sum to one. A restorer whose receptive field reaches at most
``overlap / 4`` pixels gives exactly its untiled output (each weighted pixel sees all of its
field inside the tile); for wider fields (U-Nets, global pooling) the blend keeps the seams
smooth and the difference small. Gradients flow through the tiles like any other operation;
with autograd on, each tile is checkpointed (recomputed on the backward pass), so memory holds
one tile's activations plus the image, not every tile's.

Which calls tile: a restorer's ``tile`` parameter (pixels; 0 never tiles), or, unset, a memory
budget (``ARENA_TILE_MEMORY_MB``, default 2048): the module's activation bytes per pixel are
measured once by a probe, and an image whose forward would need more is tiled at the largest
side that fits.

How: ``enable`` gives the module an instance ``forward`` (a method bound to it) that decides
per call and otherwise runs the class's own. The class is left alone, so ``type(model)`` is
the architecture, and ``tile = 0`` leaves the module untouched. It is set when the restorer is
loaded and never after: the worker snapshots a module's attributes then, and reads a later
change as tampering (arena.match.module_state). Tiles run the class's forward directly, so
the module is called once per batch and its hooks count one evaluation, not one per tile.
"""

from __future__ import annotations

import math
import os
import types
import weakref

import torch
from torch.utils.checkpoint import checkpoint

DEFAULT_MEMORY_MB = 2048
PROBE = 32
_BYTES_PER_PX: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def window(length: int, overlap: int, head: bool, tail: bool) -> torch.Tensor:
    """1-D blending weights of a tile: ramps on the sides that meet another tile."""
    w = torch.ones(length)
    if overlap < 2:
        return w
    d = torch.arange(length, dtype=torch.float32)
    q = overlap / 4

    def ramp(dist):
        return (0.5 - 0.5 * torch.cos(math.pi * ((dist - q) / (2 * q)).clamp(0, 1)))

    if head:
        w = w * ramp(d + 0.5)
    if tail:
        w = w * ramp(length - d - 0.5)
    return w


def starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile origins covering ``size``, evenly spread: neighbours share at least ``overlap``."""
    if size <= tile:
        return [0]
    n = math.ceil((size - overlap) / (tile - overlap))
    return [round(i * (size - tile) / (n - 1)) for i in range(n)]


def tiled(fn, x: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """``fn(x)`` computed tile by tile (``fn`` maps (N, C, h, w) to the same shape) and blended."""
    n, c, h, w = x.shape
    ys, xs = starts(h, tile, overlap), starts(w, tile, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return fn(x)
    out = x.new_zeros(n, c, h, w)
    weight = x.new_zeros(1, 1, h, w)
    grad = torch.is_grad_enabled() and x.requires_grad
    for i, y0 in enumerate(ys):
        th = min(tile, h)
        wy = window(th, overlap, head=i > 0, tail=i < len(ys) - 1)
        for j, x0 in enumerate(xs):
            tw = min(tile, w)
            wx = window(tw, overlap, head=j > 0, tail=j < len(xs) - 1)
            win = (wy[:, None] * wx[None, :]).to(x)[None, None]
            part = x[..., y0:y0 + th, x0:x0 + tw].contiguous()
            y = checkpoint(fn, part, use_reentrant=False) if grad else fn(part)
            out[..., y0:y0 + th, x0:x0 + tw] += y * win  # autograd records the slice (CopySlices)
            weight[..., y0:y0 + th, x0:x0 + tw] += win
    return out / weight.clamp_min(1e-12)


def activation_bytes_per_pixel(module: torch.nn.Module, x: torch.Tensor, *cond) -> float:
    """Bytes of every leaf module's output per input pixel and image, on a small probe: what
    autograd keeps for the backward pass, roughly."""
    total = [0]

    def count(_m, _i, out):
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * out.element_size()

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            probe = x[:1, :, :PROBE, :PROBE]
            type(module).forward(module, probe, *(c[:1] for c in cond))
    finally:
        for hd in handles:
            hd.remove()
    return total[0] / (probe.shape[-2] * probe.shape[-1])


def budget_tile(module, x: torch.Tensor, cond) -> int:
    """The tile side a memory budget allows for ``x`` (0: untiled fits)."""
    if module not in _BYTES_PER_PX:  # kept beside the module: the arena watches its attributes
        _BYTES_PER_PX[module] = activation_bytes_per_pixel(module, x, *cond)
    per_px = _BYTES_PER_PX[module]
    budget = float(os.environ.get("ARENA_TILE_MEMORY_MB", DEFAULT_MEMORY_MB)) * 2**20
    n, _, h, w = x.shape
    if n * h * w * per_px <= budget:
        return 0
    side = int(math.sqrt(budget / (n * per_px))) // 32 * 32
    return max(side, 64)


def tiling_forward(self: torch.nn.Module, lq: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
    """The forward ``enable`` binds to a module: its class's forward, tiled when asked or when
    the memory budget says so."""
    untiled = type(self).forward
    tile = self.arena_tile
    if tile is None:
        tile = budget_tile(self, lq, cond)
    if not tile or (lq.shape[-2] <= tile and lq.shape[-1] <= tile):
        return untiled(self, lq, *cond)
    overlap = min(self.arena_overlap, tile // 2)
    return tiled(lambda part: untiled(self, part, *cond), lq, tile, overlap)


def enable(module: torch.nn.Module, tile: int | None, overlap: int) -> torch.nn.Module:
    """Make ``module`` tile its forward: at ``tile`` pixels, or (None) as the memory budget
    decides per call; ``tile`` 0 leaves it untouched. Same class, parameters and state dict.
    The forward is a bound method, so ``copy.deepcopy`` (fine-tuning copies) binds it to the copy."""
    if tile == 0:
        return module
    module.arena_tile, module.arena_overlap = tile, overlap
    module.forward = types.MethodType(tiling_forward, module)
    return module
