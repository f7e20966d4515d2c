"""UDC data: image formation, display PSFs, the embedded benchmark and real-dataset loaders.

The formation model is DISCNet's (Feng et al., CVPR 2021): y = φ(C(x ∗ k + n)), with x an HDR
scene, k a display PSF from Fraunhofer diffraction, n Poisson–Gaussian sensor noise, C
saturation at 1.0 and φ(x) = x/(x + 0.25). Images are (N, 3, H, W) float32 in [0, 1] in the
tone-mapped domain.
"""

from __future__ import annotations

from .dataset import DataError, UDCData, data_hash
from .embedded import VERSION as EMBEDDED_VERSION
from .embedded import cache_path, check_embedded, default_cache_dir, load_embedded
from .formation import (circular_convolve, convolve, form_udc, inverse_tonemap, psf_to_otf,
                        srgb_to_linear, tonemap)
from .preview import preview
from .psf import (ANGLES, CHANNEL_WAVELENGTHS, LAYOUTS, OPTICS, Optics, kernel_codes,
                  make_psf, psf_bank, pupil)
from .real import check_real, load_real

DATASETS = ("embedded", "embedded-full", "discnet", "poled", "toled")


def load_data(name: str = "embedded", split: str = "test", *, root: str | None = None,
              images: int | None = None, size: int = 64, seed: int = 0,
              cache_dir: str | None = None) -> UDCData:
    """Load a dataset by name.

    "embedded" synthesises the built-in benchmark (cached under `cache_dir`, default
    $ARENA_CACHE/data or ~/.cache/udc-arena/data); `seed` picks the crops and noise.
    "discnet", "poled" and "toled" read the folder `root` and centre-crop to `size`
    (size <= 0 keeps full frames). `images` keeps the first N samples in the dataset's order.
    """
    if name == "embedded":
        return load_embedded(split, images=images, size=size, seed=seed, cache_dir=cache_dir)
    if name == "embedded-full":  # the test photographs whole, at `size` (arena/data/full.py)
        from .full import load_full

        try:
            return load_full(split, images=images, size=size, seed=seed)
        except ValueError as exc:
            raise DataError(str(exc)) from None
    if name in DATASETS:
        if root is None:
            raise DataError(f"dataset {name!r} needs root= pointing at its folder")
        return load_real(name, root, split, images=images, size=size)
    raise DataError(f"unknown dataset {name!r}; choose from {list(DATASETS)}")


def check_dataset(fmt: str, root: str) -> list[str]:
    """Human-readable problems with a dataset folder (empty when it loads cleanly).

    For "embedded", `root` is ignored and the bundled photographs are checked.
    """
    if fmt == "embedded":
        return check_embedded()
    if fmt not in DATASETS:
        return [f"unknown dataset format {fmt!r}; choose from {list(DATASETS)}"]
    return check_real(fmt, root)


__all__ = [
    "ANGLES", "CHANNEL_WAVELENGTHS", "DATASETS", "DataError", "EMBEDDED_VERSION", "LAYOUTS",
    "OPTICS", "Optics", "UDCData", "cache_path", "check_dataset", "circular_convolve",
    "convolve", "data_hash", "default_cache_dir", "form_udc", "inverse_tonemap",
    "kernel_codes", "load_data", "make_psf", "preview", "psf_bank", "psf_to_otf", "pupil",
    "srgb_to_linear", "tonemap",
]
