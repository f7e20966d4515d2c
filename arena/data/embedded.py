"""The embedded benchmark: UDC pairs synthesised from the photographs scikit-image ships.

Each photograph is linearised and given HDR highlights (its brightest pixels boosted 10–50×
to stand in for lamps and sun glints, which is what makes UDC flare visible), then cropped
with scene context around the crop, degraded by one of the display PSFs with sensor noise and
saturation, and tone-mapped. Train and test use disjoint photographs and the same PSFs.

Training may draw on more photographs than the train split's nine, never touching the test
split: "extra" adds scenes that other installed packages ship (scikit-learn's and PyWavelets'
where installed, the `scenes` extra), and "val" holds out two further photographs for choosing
checkpoints, so that the test split is read only to report.

Every sample draws its randomness from its own SeedSequence (seed, split, photo, crop, PSF
slot), so a sample does not depend on how many others are generated, and the same seed gives
byte-identical tensors.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import skimage.data
import skimage.transform
import torch

from arena import defaults

from .dataset import UDCData
from .formation import form_udc, srgb_to_linear
from .psf import kernel_codes, psf_bank

VERSION = "embedded-v1"  # bump whenever the formation or the sample list changes
PSF_SIZE = 63
CODE_DIMS = 5

# Gain of the HDR highlights (log-uniform) and the sensor: photons at full well (log-uniform)
# and read noise in units of the saturation level. The gain sets the benchmark's difficulty:
# 10-50x made most poled crops unrecognisable (mean input PSNR 16 dB); 8-32x gives about 18.
HIGHLIGHT_GAIN = (8.0, 32.0)
PHOTONS = (400.0, 4000.0)
READ_NOISE = (0.001, 0.004)
EXPOSURE = (0.6, 1.2)


def _rgb(fn: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        im = np.asarray(fn())
        if im.ndim == 2:  # grey photographs become neutral colour scenes
            im = np.stack([im] * 3, axis=-1)
        return im[..., :3]
    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image  # the `scenes` extra

        return load_sample_image(name)
    return load


def _pywt(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import pywt.data  # the `scenes` extra

        return getattr(pywt.data, name)()
    return load


def _matplotlib(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from matplotlib import cbook
        from PIL import Image

        with cbook.get_sample_data(name) as f:
            return np.asarray(Image.open(f).convert("RGB"))
    return load


# Photographs by split; no photograph (or view of the same scene) is in two. "extra" and "val"
# are for training only (their photographs are the ones these packages ship that are photographs:
# not skimage's drawings, text pages, silhouettes, motion-blurred clock or second motorcycle view,
# nor matplotlib's icons and elevation maps).
PHOTOS: dict[str, dict[str, Callable[[], np.ndarray]]] = {
    "train": {
        "astronaut": _rgb(skimage.data.astronaut),
        "chelsea": _rgb(skimage.data.chelsea),
        "immunohistochemistry": _rgb(skimage.data.immunohistochemistry),
        "retina": _rgb(skimage.data.retina),
        "motorcycle": _rgb(lambda: skimage.data.stereo_motorcycle()[0]),
        "camera": _rgb(skimage.data.camera),
        "moon": _rgb(skimage.data.moon),
        "coins": _rgb(skimage.data.coins),
        "grass": _rgb(skimage.data.grass),
    },
    "test": {
        "coffee": _rgb(skimage.data.coffee),
        "rocket": _rgb(skimage.data.rocket),
        "hubble": _rgb(skimage.data.hubble_deep_field),
    },
    "extra": {
        "china": _rgb(_sklearn("china.jpg")),
        "flower": _rgb(_sklearn("flower.jpg")),
        "gravel": _rgb(skimage.data.gravel),
        "aero": _rgb(_pywt("aero")),
        "ascent": _rgb(_pywt("ascent")),
    },
    "val": {
        "grace_hopper": _rgb(_matplotlib("grace_hopper.jpg")),
        "brick": _rgb(skimage.data.brick),
    },
}
#: Photographs whose package is an optional extra: a split goes on without them where it is
#: missing (sample ids and seeds of the others do not move).
OPTIONAL = {"china": "sklearn", "flower": "sklearn", "aero": "pywt", "ascent": "pywt"}
# crops per (photo, PSF): 729 train, 81 test, up to 405 extra and 72 val samples
CROPS_PER_PAIR = {"train": 9, "test": 3, "extra": 9, "val": 4}
_SPLIT_IDS = {"train": 1, "test": 2, "extra": 3, "val": 4}


def available_photos(split: str) -> list[str]:
    """The split's photographs that can be loaded here (all but optional ones not installed)."""
    return [name for name in PHOTOS[split]
            if name not in OPTIONAL or importlib.util.find_spec(OPTIONAL[name]) is not None]


@dataclass(frozen=True)
class Sample:
    index: int
    photo: str
    photo_index: int
    crop: int
    slot: int  # position in the PSF round robin; picks the PSF together with the photo
    psf: int


def sample_plan(split: str, n_psf: int) -> list[Sample]:
    """The split's samples in their fixed order.

    Round robin: for each crop round and each PSF slot, every photo once, with the PSF index
    shifted by the photo, so the first few samples already cover several photos and all
    layouts (the PSF bank is ordered layout-fastest).
    """
    photos = list(PHOTOS[split])
    here = set(available_photos(split))
    out = []
    for c in range(CROPS_PER_PAIR[split]):
        for m in range(n_psf):
            for p, name in enumerate(photos):
                if name in here:  # p stays the photo's place in the full list, its seed
                    out.append(Sample(len(out), name, p, c, m, (m + p) % n_psf))
    return out


@functools.lru_cache(maxsize=32)
def _prepared_photo(split: str, name: str,
                    short_side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear scene (3, H, W) in [0, 1], its highlight weight map (H, W) in [0, 1] and the
    (row, col) coordinates of its light sources."""
    im = PHOTOS[split][name]().astype(np.float64)
    im = im / (255.0 if im.max() > 1.0 else 1.0)
    lin = srgb_to_linear(im)
    h, w = lin.shape[:2]
    if min(h, w) != short_side:
        # Resampling in the linear domain keeps highlight energy right.
        scale = short_side / min(h, w)
        lin = skimage.transform.resize(
            lin, (max(short_side, round(h * scale)), max(short_side, round(w * scale))),
            order=1, anti_aliasing=scale < 1, preserve_range=True)
    lin = np.clip(lin, 0.0, 1.0)
    lum = lin @ np.array([0.2126, 0.7152, 0.0722])
    # The brightest ~1.5% become light sources; a ramp (not a step) keeps them smooth-edged.
    lo = max(float(np.quantile(lum, 0.985)), 0.3)
    hi = max(float(np.quantile(lum, 0.999)), lo + 0.05)
    weight = np.clip((lum - lo) / (hi - lo), 0.0, 1.0)
    scene = np.ascontiguousarray(lin.transpose(2, 0, 1))
    bright = np.argwhere(weight > 0.5)
    for a in (scene, weight, bright):
        a.setflags(write=False)
    return scene, weight, bright


def _short_side(size: int, margin: int) -> int:
    # Photos are shrunk so a crop shows scene structure (edges, lamps), not just texture,
    # but never below what one crop with its PSF context needs.
    return max(5 * size, size + 2 * margin + 2)


def _make_sample(s: Sample, split: str, size: int, seed: int, bank: np.ndarray):
    margin = bank.shape[-1] // 2
    region = size + 2 * margin
    rng = np.random.default_rng(
        np.random.SeedSequence([seed, _SPLIT_IDS[split], s.photo_index, s.crop, s.slot]))
    scene, weight, bright = _prepared_photo(split, s.photo, _short_side(size, margin))
    h, w = weight.shape
    if min(h, w) < region:  # only for crops larger than most photographs
        raise ValueError(f"size {size} is too large for photograph {s.photo} ({h}x{w})")
    if s.crop % 3 == 0 and len(bright):
        # A third of the crops are aimed near a light source so flare and saturation are common.
        cy, cx = bright[rng.integers(len(bright))] + rng.integers(-size // 3, size // 3 + 1, 2)
        top = int(np.clip(cy - region // 2, 0, h - region))
        left = int(np.clip(cx - region // 2, 0, w - region))
    else:
        top = int(rng.integers(0, h - region + 1))
        left = int(rng.integers(0, w - region + 1))
    gain = float(np.exp(rng.uniform(*np.log(HIGHLIGHT_GAIN))))
    exposure = float(rng.uniform(*EXPOSURE))
    photons = float(np.exp(rng.uniform(*np.log(PHOTONS))))
    read_noise = float(rng.uniform(*READ_NOISE))
    sl = (slice(top, top + region), slice(left, left + region))
    x = scene[:, sl[0], sl[1]] * (1.0 + (gain - 1.0) * weight[sl]) * exposure
    lq, hq, noise = form_udc(x, bank[s.psf], rng, margin=margin, photons=photons,
                             read_noise=read_noise, parts=True)
    return lq, hq, {"scene": x.astype(np.float32), "noise": noise, "photons": photons,
                    "read_noise": read_noise}


#: Splits whose HDR scenes, noise draws and sensors are kept (the scene threat model). The
#: test split only: matches evaluate on it, and the train split's scenes (729 samples with
#: their PSF context) would multiply the cache for nothing.
SCENE_SPLITS = ("test",)
SCENE_KEYS = ("scene", "noise", "photons", "read_noise")


def generate(split: str, size: int, seed: int) -> dict[str, np.ndarray]:
    """All arrays of one split, as stored in the cache."""
    if split not in PHOTOS:
        raise ValueError(f"unknown split {split!r}; choose from {list(PHOTOS)}")
    if size < 8:
        raise ValueError(f"size must be at least 8, got {size}")
    bank, psf_names = psf_bank(PSF_SIZE)
    codes = kernel_codes(bank, CODE_DIMS)
    plan = sample_plan(split, len(bank))
    lq = np.empty((len(plan), 3, size, size), dtype=np.float32)
    hq = np.empty_like(lq)
    kept: dict[str, list] = {k: [] for k in SCENE_KEYS}
    for s in plan:
        lq[s.index], hq[s.index], parts = _make_sample(s, split, size, seed, bank)
        for k in kept:
            kept[k].append(parts[k])
    scenes = {k: np.stack(v).astype(np.float32) for k, v in kept.items()} if split in SCENE_SPLITS else {}
    return {
        "lq": lq, "hq": hq, "psf_bank": bank, "code_bank": codes,
        "psf_index": np.array([s.psf for s in plan], dtype=np.int64),
        "ids": np.array([f"{s.photo}-c{s.crop}-{psf_names[s.psf]}" for s in plan]),
        **scenes,
    }


def _to_data(arrays: dict[str, np.ndarray]) -> UDCData:
    idx = torch.from_numpy(np.asarray(arrays["psf_index"], dtype=np.int64))
    return UDCData(
        lq=torch.from_numpy(np.ascontiguousarray(arrays["lq"])),
        hq=torch.from_numpy(np.ascontiguousarray(arrays["hq"])),
        psf=torch.from_numpy(np.ascontiguousarray(arrays["psf_bank"]))[idx],
        code=torch.from_numpy(np.ascontiguousarray(arrays["code_bank"]))[idx],
        ids=[str(i) for i in arrays["ids"]],
        name="embedded", version=VERSION,
        **{k: torch.from_numpy(np.ascontiguousarray(arrays[k])) if k in arrays else None
           for k in SCENE_KEYS},
    )


def default_cache_dir() -> Path:
    return defaults.cache_dir("data")


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """Digest of the generator's source. It is part of the cache key so that an edit to the
    formation that forgot to bump VERSION still cannot serve stale cached data."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("psf.py", "formation.py", "embedded.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:12]


def cache_path(split: str, size: int, seed: int, cache_dir: str | os.PathLike | None) -> Path:
    d = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return d / f"{VERSION}-{source_digest()}-{split}-s{size}-seed{seed}.npz"


def _write_atomic(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, path)  # readers see the old file or the whole new one, never a part
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _read_cache(path: Path, meta: dict) -> UDCData | None:
    """The cached split, or None when the file is absent, stale or damaged (then regenerate)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = json.loads(str(z["meta"]))
            if {k: stored.get(k) for k in meta} != meta:
                return None
            arrays = {k: z[k] for k in ("lq", "hq", "psf_bank", "code_bank", "psf_index", "ids")}
            arrays.update({k: z[k] for k in SCENE_KEYS if k in z.files})
            if meta["split"] in SCENE_SPLITS and not all(k in arrays for k in SCENE_KEYS):
                return None
        data = _to_data(arrays)
    except (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile):
        return None
    return data if data.hash == stored.get("hash") else None


def load_embedded(split: str = "test", *, images: int | None = None, size: int = 64,
                  seed: int = 0, cache_dir: str | None = None) -> UDCData:
    path = cache_path(split, size, seed, cache_dir)
    meta = {"version": VERSION, "source": source_digest(), "split": split, "size": size,
            "seed": seed}
    if any(name in OPTIONAL for name in PHOTOS.get(split, ())):
        # a file written before an optional package was installed (or after it went) is stale
        meta["photos"] = available_photos(split)
    data = _read_cache(path, meta)
    if data is None:
        arrays = generate(split, size, seed)
        data = _to_data(arrays)
        try:
            _write_atomic(path, arrays, {**meta, "hash": data.hash})
        except OSError:
            pass  # a read-only cache only costs regeneration next time
    if images is not None:
        if images < 1:
            raise ValueError(f"images must be positive, got {images}")
        data = data.subset(list(range(min(images, len(data)))))
    return data


def check_embedded() -> list[str]:
    """Problems that would stop the benchmark from being generated (missing photographs)."""
    problems = []
    for split, photos in PHOTOS.items():
        for name, load in photos.items():
            if name not in available_photos(split):
                continue  # an optional extra's photograph, not installed: not a problem
            try:
                im = load()
                if im.ndim != 3 or im.shape[-1] != 3:
                    problems.append(f"photograph {name} ({split}): unexpected shape {im.shape}")
            except Exception as e:  # noqa: BLE001 - report every failure, whatever its kind
                problems.append(f"photograph {name} ({split}): cannot load ({e})")
    return problems


__all__ = ["VERSION", "available_photos", "load_embedded", "generate", "sample_plan", "cache_path", "check_embedded"]
