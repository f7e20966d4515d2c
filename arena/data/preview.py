"""A contact sheet of the embedded benchmark: ground truth, UDC input and PSF per sample."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def psf_image(psf: np.ndarray, decades: float = 5.0) -> np.ndarray:
    """(K, K, 3) RGB view of a (3, K, K) PSF: log10 of each channel over `decades` decades,
    each normalised to its own peak, so the faint tail and the colour of each order show."""
    p = np.asarray(psf, dtype=np.float64)
    p = p / np.maximum(p.max(axis=(1, 2), keepdims=True), 1e-30)
    img = (np.log10(np.maximum(p, 10.0 ** -decades)) + decades) / decades
    return img.transpose(1, 2, 0)


def preview(path: str, n: int = 4, size: int = 64, seed: int = 0, *,
            split: str = "test", cache_dir: str | None = None) -> str:
    """Write a PNG sheet for `n` test samples chosen to span the display layouts; return path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .embedded import load_embedded

    data = load_embedded(split, size=size, seed=seed, cache_dir=cache_dir)
    picks = _spanning(data.ids, n)
    fig, axes = plt.subplots(3, len(picks), figsize=(2.4 * len(picks), 7.4), squeeze=False)
    rows = ("ground truth φ(x)", "UDC input φ(C(x∗k+n))", "PSF (log, 5 decades)")
    for j, i in enumerate(picks):
        gt = data.hq[i].numpy().transpose(1, 2, 0)
        lq = data.lq[i].numpy().transpose(1, 2, 0)
        mse = float(np.mean((gt.astype(np.float64) - lq) ** 2))
        for r, img in enumerate((gt, lq, psf_image(data.psf[i].numpy()))):
            ax = axes[r, j]
            ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(rows[r], fontsize=8)
        axes[0, j].set_title(data.ids[i], fontsize=8)
        axes[1, j].set_title(f"PSNR {10 * np.log10(1 / max(mse, 1e-12)):.1f} dB", fontsize=8)
    fig.suptitle(f"{data.version} {split} (size {size}, seed {seed})", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; this is a picture to share
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(out)


def _spanning(ids: list[str], n: int) -> list[int]:
    """Samples in order, taking one per layout first, then new (layout, photo) pairs."""
    layout = [i.rsplit("-", 1)[-1].rstrip("0123456789") for i in ids]
    photo = [i.split("-", 1)[0] for i in ids]
    chosen: list[int] = []
    for key in (lambda i: (layout[i],), lambda i: (layout[i], photo[i]), lambda i: ()):
        seen = {key(i) for i in chosen}
        for i in range(len(ids)):
            if len(chosen) >= n:
                return chosen
            if i not in chosen and key(i) not in seen:
                chosen.append(i)
                seen.add(key(i))
    for i in range(len(ids)):  # n larger than the distinct groups: fill in order
        if len(chosen) >= n:
            break
        if i not in chosen:
            chosen.append(i)
    return chosen
