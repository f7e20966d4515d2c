"""Procedural HDR scenes for training restorers: dead leaves with light sources.

Nine training photographs are too few for a restorer to generalise from: trained on them
alone, a restorer scores higher on held-out crops of those photographs and lower on the test
photographs. Dead-leaves images (Matheron's model, occluding disks with a power-law size
distribution) share the edge and scale statistics of natural images, and restoration
networks trained on them generalise to photographs (Achddou et al., "Synthetic images as a
regularity prior for image restoration neural networks", SSVM 2021). Here they are drawn in
linear HDR radiance with the light sources that make UDC flare (small disks 8-32x above
saturation, as in the embedded benchmark), sometimes on a dim "night" scene, and with the
scene context around the frame that the PSF spreads into it.
"""

from __future__ import annotations

import numpy as np

# Disk radii follow p(r) ∝ r^-3 between these bounds (in pixels; the upper one is also capped
# by the scene size), the scale-invariant choice of the dead-leaves literature.
RADIUS = (2.0, 48.0)
DISKS = (600, 1000)
SOURCE_GAIN = (8.0, 32.0)  # light sources, in units of the sensor's saturation (log-uniform)
NIGHT = 0.3  # share of scenes dimmed 5-20x so that their light sources dominate


def _radii(rng: np.random.Generator, n: int, r_max: float) -> np.ndarray:
    lo, hi = RADIUS[0], min(RADIUS[1], r_max)
    u = rng.uniform(size=n)
    return (lo ** -2 - u * (lo ** -2 - hi ** -2)) ** -0.5


def _colors(rng: np.random.Generator, n: int) -> np.ndarray:
    """Linear RGB colours: a grey level (sRGB-uniform, so dark tones are common) times a tint."""
    grey = rng.uniform(0.02, 1.0, size=(n, 1)) ** 2.2
    tint = rng.dirichlet(np.full(3, 1.5), size=n) * 3.0
    mix = rng.uniform(0.0, 1.0, size=(n, 1))  # 0 = neutral, 1 = fully tinted
    return np.clip(grey * (1.0 - mix + mix * tint), 0.0, 1.0)


def _paint(canvas: np.ndarray, cy: float, cx: float, r: float, color: np.ndarray) -> None:
    """Paint a disk over the canvas (3, H, W) in place, touching only its bounding box."""
    h, w = canvas.shape[1:]
    y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 2)
    x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 2)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    canvas[:, y0:y1, x0:x1][:, inside] = color[:, None]


def dead_leaves(rng: np.random.Generator, size: int, margin: int = 0) -> np.ndarray:
    """A linear HDR scene (3, size + 2·margin, size + 2·margin), float64, 1.0 = saturation."""
    side = size + 2 * margin
    n = int(rng.integers(*DISKS))
    canvas = np.empty((3, side, side))
    canvas[:] = _colors(rng, 1)[0][:, None, None]
    centres = rng.uniform(-0.1 * side, 1.1 * side, size=(n, 2))
    radii = _radii(rng, n, side / 2)
    colors = _colors(rng, n)
    for (cy, cx), r, c in zip(centres, radii, colors):
        _paint(canvas, cy, cx, r, c)
    if rng.uniform() < NIGHT:
        canvas *= rng.uniform(0.05, 0.2)
    # Light sources, anywhere in the scene (those outside the frame still flare into it).
    for _ in range(int(rng.integers(0, 7))):
        gain = np.exp(rng.uniform(*np.log(SOURCE_GAIN)))
        tint = 1.0 - 0.3 * rng.uniform(size=3)
        _paint(canvas, *rng.uniform(0, side, size=2), rng.uniform(0.7, 4.0), gain * tint)
    return canvas


__all__ = ["dead_leaves"]
