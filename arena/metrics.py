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


def ssim_window(shape: torch.Size | tuple[int, ...]) -> dict[str, int | float]:
    """The Gaussian window SSIM uses on images of ``shape`` (..., H, W): side 11 and sigma 1.5,
    shrunk in proportion for images smaller than 12 pixels. Keyword arguments of torchmetrics'
    ``structural_similarity_index_measure``, for every caller that needs the same window."""
    size = min(11, (min(shape[-2:]) // 2) * 2 - 1)
    return {"kernel_size": size, "sigma": 1.5 * size / 11}


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM per image (:func:`ssim_window`). Differentiable."""
    return structural_similarity_index_measure(x, y, data_range=1.0, reduction="none", **ssim_window(x.shape))
