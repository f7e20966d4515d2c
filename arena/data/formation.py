"""UDC image formation, DISCNet (Feng et al., CVPR 2021): y = φ(C(x ∗ k + n)).

Arrays here are channel-first (3, H, W) like the tensors the arena passes around, and HDR
values are linear radiance where 1.0 is the sensor's saturation level.
"""

from __future__ import annotations

import numpy as np
import scipy.signal

TONEMAP_SHIFT = 0.25  # φ(x) = x / (x + 0.25), DISCNet's "simple" tone map
SATURATION = 1.0  # the sensor's clipping level C, in units of linear radiance


def tonemap(x):
    """φ(x) = x / (x + 0.25): maps [0, ∞) to [0, 1). Works on numpy arrays and torch tensors."""
    return x / (x + TONEMAP_SHIFT)


def inverse_tonemap(y):
    """φ⁻¹(y) = 0.25·y / (1 − y), defined for y in [0, 1)."""
    return TONEMAP_SHIFT * y / (1.0 - y)


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """Undo the sRGB transfer curve (IEC 61966-2-1) of display-referred values in [0, 1]."""
    v = np.asarray(v, dtype=np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def convolve(x: np.ndarray, psf: np.ndarray, margin: int = 0) -> np.ndarray:
    """Per-channel x ∗ k by FFT, returning the central region without `margin` on each side.

    Light from outside the frame belongs in the image, so callers should pass real scene
    context as `margin` (≥ K//2); whatever context is missing is filled by reflection, which
    beats the zero padding (dark halo) or wrap-around (light from the opposite edge) that a
    plain FFT gives.
    """
    r = psf.shape[-1] // 2
    if psf.shape[-2] != psf.shape[-1] or psf.shape[-1] % 2 != 1:
        raise ValueError(f"PSF must be square with odd size, got {psf.shape}")
    if margin < r:
        pad = r - margin
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
        margin = r
    y = scipy.signal.fftconvolve(x, psf, mode="valid", axes=(-2, -1))
    extra = margin - r
    if extra:
        y = y[:, extra:-extra, extra:-extra]
    # FFT round-off leaves tiny negative values in dark regions; radiance cannot be negative.
    return np.maximum(y, 0.0)


def circular_convolve(x: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Per-channel periodic convolution (for tests of deconvolution, where it is exact)."""
    otf = psf_to_otf(psf, x.shape[-2:])
    return np.fft.irfft2(np.fft.rfft2(x) * otf, s=x.shape[-2:])


def psf_to_otf(psf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """rfft2 of the PSF zero-padded to `shape` with its centre moved to pixel (0, 0)."""
    k = psf.shape[-1]
    big = np.zeros(psf.shape[:-2] + tuple(shape), dtype=np.float64)
    big[..., :k, :k] = psf
    big = np.roll(big, (-(k // 2), -(k // 2)), axis=(-2, -1))
    return np.fft.rfft2(big)


def add_sensor_noise(y: np.ndarray, rng: np.random.Generator, photons: float = 1000.0,
                     read_noise: float = 0.002) -> np.ndarray:
    """Poisson–Gaussian noise: shot noise for `photons` electrons at full well, plus read noise.

    Shot noise is drawn on the unclipped signal (a saturated pixel still collects photons).
    """
    shot = rng.poisson(np.maximum(y, 0.0) * photons) / photons
    return shot + rng.normal(0.0, read_noise, size=y.shape)


def form_udc(x_hdr: np.ndarray, psf: np.ndarray, rng: np.random.Generator | None = None,
             noise: bool = True, clip: bool = True, *, margin: int = 0,
             photons: float = 1000.0, read_noise: float = 0.002,
             saturation: float = SATURATION, parts: bool = False):
    """Degrade an HDR scene (3, H+2m, W+2m) into a (lq, hq) pair of (3, H, W) float32.

    lq = φ(C(x ∗ k + n)) and hq = φ(x), both in [0, 1). `margin` is how much scene context
    surrounds the frame. Without clipping the signal is only floored at zero. With `parts`
    the sensor noise realisation (3, H, W) float32, added to x ∗ k before clipping, comes
    third (the scene threat model replays it: arena/threat.py ``SceneRender``).
    """
    x = np.asarray(x_hdr, dtype=np.float64)
    psf = np.asarray(psf, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] != psf.shape[0]:
        raise ValueError(f"scene {x.shape} and PSF {psf.shape} need the same channel count")
    clean = y = convolve(x, psf, margin)
    if noise:
        if rng is None:
            raise ValueError("noise=True needs an rng")
        y = add_sensor_noise(y, rng, photons, read_noise)
    drawn = (y - clean).astype(np.float32)
    y = np.clip(y, 0.0, saturation) if clip else np.maximum(y, 0.0)
    core = x[:, margin:x.shape[1] - margin, margin:x.shape[2] - margin] if margin else x
    hq = tonemap(np.maximum(core, 0.0))
    if parts:
        return tonemap(y).astype(np.float32), hq.astype(np.float32), drawn
    return tonemap(y).astype(np.float32), hq.astype(np.float32)


# --------------------------------------------------------------------------------------------
# The same model in torch, differentiable (the scene threat model attacks through it)
# --------------------------------------------------------------------------------------------


def torch_convolve(x, psf, margin: int = 0):
    """Per-row, per-channel x ∗ k of torch tensors (N, 3, S, S) and (N, 3, K, K) by FFT: the
    central region without `margin` on each side, padded by reflection where the context is
    short of K//2, exactly as ``convolve`` does. Differentiable."""
    import torch

    k = psf.shape[-1]
    r = k // 2
    if psf.shape[-2] != k or k % 2 != 1:
        raise ValueError(f"PSF must be square with odd size, got {tuple(psf.shape)}")
    if margin < r:
        pad = r - margin
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
        margin = r
    s = x.shape[-2:]
    # a circular convolution of the scene's own size is the linear one on the rows and columns
    # whose kernel footprint stays inside: the "valid" region, from K - 1 on
    y = torch.fft.irfft2(torch.fft.rfft2(x, s=s) * torch.fft.rfft2(psf, s=s), s=s)[..., k - 1:, k - 1:]
    extra = margin - r
    if extra:
        y = y[..., extra:-extra, extra:-extra]
    return y.clamp_min(0.0)


def torch_noise(y, photons, read_noise, generator):
    """A draw of Poisson–Gaussian noise in its Gaussian form (variance y/photons + read²), per
    row's `photons` and `read_noise` (N,), from `generator` (on the CPU). Rows with infinite
    photons and no read noise get none. Differentiable in y (reparameterised)."""
    import torch

    photons = photons.to(y.device, y.dtype).view(-1, 1, 1, 1)
    read = read_noise.to(y.device, y.dtype).view(-1, 1, 1, 1)
    on = (torch.isfinite(photons) | (read > 0)).to(y.dtype)
    var = y.clamp_min(0.0) / photons + read * read
    std = torch.where(on > 0, var, torch.ones_like(var)).sqrt() * on
    z = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=generator.device)
    return std * z.to(y.device)


def torch_render(x, psf, noise=None, *, margin: int = 0, clip: bool = True,
                 saturation: float = SATURATION):
    """lq = φ(C(x ∗ k + n)) of a torch HDR scene batch (N, 3, H+2m, W+2m), with `noise` a
    tensor (N, 3, H, W) added before clipping (or None). Differentiable: clipping passes no
    gradient where it saturates, as the sensor passes no signal."""
    y = torch_convolve(x, psf, margin)
    if noise is not None:
        y = y + noise
    y = y.clamp(0.0, saturation) if clip else y.clamp_min(0.0)
    return tonemap(y)
