"""Point spread functions of a camera behind a display, by Fraunhofer diffraction.

The display in front of the lens is a periodic transmission mask. In the far field the
intensity on the sensor is |FFT(pupil)|², where pupil = circular lens aperture × display
mask. A spatial frequency ν (cycles per pupil sample) lands at sensor position
x = f·λ·ν / Δξ, so the same pupil pattern is spread wider for longer wavelengths: red grating
orders sit further from the centre than blue ones. We get that scaling exactly by padding the
FFT to N_λ ∝ λ, which makes one frequency bin the same size on the sensor at every wavelength
(see `Optics`). Each colour channel averages a few wavelengths of its band, and each sensor
pixel integrates the intensity over its area (the FFT is oversampled and summed in blocks).

The geometry is scaled down from a phone (hundreds of display periods over the aperture) so
that the first grating orders land 6–12 px from the centre and the whole flare pattern fits in
a kernel of a few tens of pixels, which is what a 64 px benchmark crop can show.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import scipy.fft

# Sample wavelengths (nm) per colour channel; flat spectral response within each band.
CHANNEL_WAVELENGTHS: dict[str, tuple[float, ...]] = {
    "R": (600.0, 626.7, 653.3, 680.0),
    "G": (500.0, 526.7, 553.3, 580.0),
    "B": (420.0, 443.3, 466.7, 490.0),
}


@dataclass(frozen=True)
class Optics:
    """Sampling of the pupil and the sensor.

    `field_px` is how many sensor pixels the (padded) pupil FFT spans at `lambda_ref`;
    together with the pupil sample spacing this stands for f/Δξ. A pattern with period T
    pupil samples therefore puts its first diffraction order at
    ``field_px * (λ / lambda_ref) / T`` sensor pixels from the centre.
    `aperture` is the lens aperture diameter in pupil samples: the Airy core radius is
    1.22·field_px/aperture px (≈1.2 px, a diffraction-limited phone camera at f/2).
    """

    field_px: float = 160.0
    oversample: int = 3  # FFT bins per sensor pixel (odd, so the DC bin is a pixel centre)
    aperture: float = 163.0
    lambda_ref: float = 550.0
    antialias: int = 4  # sub-samples per pupil sample along each axis when drawing masks

    def fft_size(self, wavelength: float) -> int:
        return int(round(self.oversample * self.field_px * wavelength / self.lambda_ref))

    def order_radius(self, period: float, wavelength: float) -> float:
        """Distance (sensor px) of the first grating order of a period-`period` mask."""
        # Frequency 1/period sits at FFT bin N_λ/period, and the PSF sums `oversample` bins
        # per pixel; N_λ ∝ λ (rounded to an integer, < 0.2% off) gives the λ scaling.
        return self.fft_size(wavelength) / (period * self.oversample)


OPTICS = Optics()


@dataclass(frozen=True)
class Layout:
    """A display pixel layout: a periodic transmission pattern over a (px, py) cell.

    `openings(a, b)` gets cell coordinates a, b in [0, 1) and returns the transmission
    in [0, 1] (binary openings, or grey for semi-transparent electrodes).
    """

    name: str
    period: tuple[float, float]  # (along the layout's x axis, along its y axis), pupil samples
    description: str

    def transmission(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _LAYOUT_FUNCS[self.name](a, b, self.period)


def _box(a, b, ca, cb, wa, wb):
    # Periodic distance so that openings centred on a cell corner wrap correctly.
    da = np.abs((a - ca + 0.5) % 1.0 - 0.5)
    db = np.abs((b - cb + 0.5) % 1.0 - 0.5)
    return (da <= wa / 2) & (db <= wb / 2)


def _poled(a, b, period):
    # Pentile-like OLED: light only passes small gaps between emitters. Openings of clearly
    # different sizes on the quincunx keep the (1,0) orders alive (similar sizes nearly cancel
    # them). Fill ≈ 0.16: most of the light goes into grating orders, so flare is severe.
    big = _box(a, b, 0.5, 0.5, 0.32, 0.32)
    small = _box(a, b, 0.0, 0.0, 0.14, 0.14)
    slit = _box(a, b, 0.0, 0.5, 0.08, 0.40)  # gap between the R and B emitters
    return (big | small | slit).astype(np.float64)


def _toled(a, b, period):
    # Stripe transparent OLED: wide vertical openings, semi-transparent (grey) electrodes and a
    # thin opaque scan line. Most light stays in the zero order, so the degradation is mild and
    # mostly a horizontal smear.
    t = np.full(a.shape, 0.45)
    t[_box(a, b, 0.5, 0.5, 0.55, 2.0)] = 1.0
    t[_box(a, b, 0.5, 0.0, 2.0, 0.10)] = 0.0
    return t


def _holes(a, b, period, diameter=15.0):
    # Round holes punched in an opaque layer, on a rectangular lattice (so 0° and 90° differ).
    da = ((a + 0.5) % 1.0 - 0.5) * period[0]
    db = ((b + 0.5) % 1.0 - 0.5) * period[1]
    return (da * da + db * db <= (diameter / 2) ** 2).astype(np.float64)


_LAYOUT_FUNCS = {"poled": _poled, "toled": _toled, "holes": _holes}

LAYOUTS: dict[str, Layout] = {
    "poled": Layout("poled", (16.0, 16.0), "pentile-like OLED, small openings (severe)"),
    "toled": Layout("toled", (24.0, 48.0), "stripe transparent OLED, wide openings (mild)"),
    "holes": Layout("holes", (20.0, 26.0), "round holes on a rectangular lattice"),
}

ANGLES: tuple[float, ...] = (0.0, 30.0, 60.0)


def pupil(layout: str, angle: float = 0.0, optics: Optics = OPTICS) -> np.ndarray:
    """Real pupil transmission (M, M): circular lens aperture × rotated display mask."""
    lay = _get_layout(layout)
    m = int(math.ceil(optics.aperture)) + 2
    ss = optics.antialias
    # Sub-sample centres inside each pupil sample; averaging them anti-aliases the edges.
    sub = (np.arange(m * ss) + 0.5) / ss - m / 2.0
    y, x = np.meshgrid(sub, sub, indexing="ij")
    th = math.radians(angle)
    # Layout axes point along (cos θ, sin θ) in (column, row) coordinates.
    u = x * math.cos(th) + y * math.sin(th)
    v = -x * math.sin(th) + y * math.cos(th)
    t = lay.transmission(u / lay.period[0] % 1.0, v / lay.period[1] % 1.0)
    t = t * (x * x + y * y <= (optics.aperture / 2.0) ** 2)
    return t.reshape(m, ss, m, ss).mean(axis=(1, 3))


def monochromatic_psf(p: np.ndarray, wavelength: float, size: int,
                      optics: Optics = OPTICS) -> np.ndarray:
    """Sensor-pixel PSF (size, size) of pupil `p` at one wavelength, unit total energy."""
    n = optics.fft_size(wavelength)
    s = optics.oversample
    if size * s > n:
        raise ValueError(f"PSF size {size} exceeds the simulated field at {wavelength} nm")
    amp = scipy.fft.fft2(p, s=(n, n), workers=-1)
    inten = np.fft.fftshift(amp.real ** 2 + amp.imag ** 2)
    inten /= inten.sum()  # every wavelength of a band carries the same energy
    c = n // 2  # DC after fftshift
    h = (size * s) // 2
    crop = inten[c - h:c - h + size * s, c - h:c - h + size * s]
    return crop.reshape(size, s, size, s).sum(axis=(1, 3))


@functools.lru_cache(maxsize=64)
def _make_psf_cached(layout: str, angle: float, size: int, optics: Optics) -> np.ndarray:
    p = pupil(layout, angle, optics)
    out = np.empty((3, size, size), dtype=np.float64)
    for ci, band in enumerate(("R", "G", "B")):
        acc = sum(monochromatic_psf(p, lam, size, optics) for lam in CHANNEL_WAVELENGTHS[band])
        out[ci] = acc / acc.sum()  # energy outside the kernel window is dropped
    out = out.astype(np.float32)
    out /= out.sum(axis=(1, 2), keepdims=True)
    out.setflags(write=False)
    return out


def make_psf(layout: str, angle: float = 0.0, size: int = 63,
             optics: Optics = OPTICS) -> np.ndarray:
    """PSF (3, size, size) float32 for RGB, each channel summing to 1. `size` must be odd."""
    if size % 2 != 1 or size < 3:
        raise ValueError(f"PSF size must be odd and >= 3, got {size}")
    _get_layout(layout)
    return _make_psf_cached(layout, float(angle), int(size), optics).copy()


def psf_bank(size: int = 63, optics: Optics = OPTICS) -> tuple[np.ndarray, list[str]]:
    """The benchmark's PSFs (P, 3, size, size) and names like 'poled0'.

    Ordered layout-fastest (poled0, toled0, holes0, poled1, …) so that any prefix of the
    benchmark spans all layouts.
    """
    psfs, names = [], []
    for ai, angle in enumerate(ANGLES):
        for lay in LAYOUTS:
            psfs.append(make_psf(lay, angle, size, optics))
            names.append(f"{lay}{ai}")
    return np.stack(psfs), names


def kernel_codes(psfs: np.ndarray, dims: int = 5) -> np.ndarray:
    """PCA codes (P, dims) of a PSF set, as DISCNet conditions on (d=5).

    Codes are whitened (unit variance per component over the set) so a network sees O(1)
    inputs, and each component's sign is fixed (largest loading positive) so the codes are
    reproducible. Components beyond the set's rank are zero.
    """
    x = np.asarray(psfs, dtype=np.float64).reshape(len(psfs), -1)
    xc = x - x.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    code = np.zeros((len(psfs), dims), dtype=np.float64)
    k = min(dims, int((s > s.max() * 1e-6).sum()) if s.size and s.max() > 0 else 0)
    for i in range(k):
        v = vt[i] * np.sign(vt[i][np.argmax(np.abs(vt[i]))])
        code[:, i] = xc @ v / (s[i] / math.sqrt(len(psfs)))
    return code.astype(np.float32)


def _get_layout(layout: str) -> Layout:
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise ValueError(
            f"unknown display layout {layout!r}; choose from {sorted(LAYOUTS)}") from None
