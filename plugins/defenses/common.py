"""Plumbing shared by the built-in defenses: ART transforms on tensors, restorer fine-tuning
and the parameters every fine-tuning defense takes."""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from arena.api import ConfigError, Field, Params, Restorer
from arena.metrics import ssim


def through_numpy(fn: Callable[[np.ndarray], np.ndarray], x: torch.Tensor,
                  channels_last: bool = False) -> torch.Tensor:
    """Apply a numpy transform (an ART preprocessor) to an NCHW batch; float32 back on x's device.

    ``channels_last`` hands the transform NHWC, for ART classes that assume it whatever their
    input looks like (TotalVarMin). The cast matters too: FeatureSqueezing returns float64.
    """
    arr = x.detach().to("cpu", torch.float32).numpy()
    if channels_last:
        arr = arr.transpose(0, 2, 3, 1)
    out = np.asarray(fn(np.ascontiguousarray(arr)))
    if channels_last:
        out = out.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(x.device)


class FineTuneParams(Params):
    """What :func:`fine_tune` and :func:`reconstruction_loss` take: one set of bounds for every
    defense that fine-tunes the restorer (finetune, advtrain)."""

    steps: int = Field(150, ge=1, le=1_000_000, description="optimiser steps")
    lr: float = Field(1e-4, gt=0, le=1, description="initial learning rate (cosine to 0)")
    batch: int = Field(8, ge=1, le=4096, description="training pairs per step")
    ssim_weight: float = Field(0.2, ge=0, le=10, description="weight of the 1 - SSIM term")


def reconstruction_loss(out: torch.Tensor, hq: torch.Tensor, ssim_weight: float) -> torch.Tensor:
    """L1 plus ``ssim_weight`` times (1 - SSIM): the usual restoration losses without a
    perceptual term (VGG weights would have to come from a model hub, which the arena avoids)."""
    loss = F.l1_loss(out, hq)
    if ssim_weight:
        loss = loss + ssim_weight * (1 - ssim(out, hq)).mean()
    return loss


Step = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def fine_tune(restorer: Restorer, model: torch.nn.Module, data, generator: torch.Generator, *,
              steps: int, lr: float, batch: int, loss: Step, desc: str,
              history: list[float] | None = None) -> dict[str, torch.Tensor]:
    """Adam with a cosine learning rate on a copy of ``model``; returns the copy's state dict.

    Each step draws a batch of training pairs with ``generator`` and minimises
    ``loss(net, lq, hq, code)``. The model the worker keeps warm is never modified.
    """
    if restorer.needs_psf and data.code is None:
        raise ConfigError(f"restorer '{restorer.name}' needs a PSF and the training data has none")
    net = copy.deepcopy(model).train().requires_grad_(True)
    device = next(net.parameters()).device
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    n = len(data)
    for _ in tqdm(range(steps), desc=desc, leave=False, disable=None):
        idx = torch.randint(0, n, (min(batch, n),), generator=generator)
        lq, hq = data.lq[idx].to(device), data.hq[idx].to(device)
        code = data.code[idx].to(device) if restorer.needs_psf else None
        value = loss(net, lq, hq, code)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        sched.step()
        if history is not None:
            history.append(value.item())
    return {k: v.detach().to("cpu").clone() for k, v in net.state_dict().items()}
