"""Per-image quality metrics, from torchmetrics (a maintained implementation of both)."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image, data range 1."""
    return peak_signal_noise_ratio(
        x.clamp(0, 1), y, data_range=1.0, reduction="none", dim=(1, 2, 3)
    )


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM per image (Gaussian window 11, sigma 1.5; smaller for tiny images). Differentiable."""
    size = min(11, (min(x.shape[-2:]) // 2) * 2 - 1)
    return structural_similarity_index_measure(
        x, y, data_range=1.0, reduction="none", kernel_size=size, sigma=1.5 * size / 11
    )
