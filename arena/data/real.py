"""Loaders for datasets on disk: DISCNet's synthetic set and the POLED/TOLED pairs.

DISCNet (Feng et al., CVPR 2021, github.com/jnjaby/DISCNet) stores HDR float arrays
(H, W, 3) as .npy and tone-maps both sides with φ(x) = x/(x+0.25) when loading. Two layouts
are read:

* simple:  root/{split}/GT/*.npy, root/{split}/input/*.npy, paired by file name; PSFs in
  root/{split}/PSF/<name>.npy or root/PSF/<name>.npy (one per sample) or a single
  root/PSF/*.npy shared by all; optional codes in root/{split}/code/<name>.npy.
* release: as the DISCNet download unpacks: root/synthetic_data/GT/{split}/*.npy,
  root/synthetic_data/input/<T>_<i>/{split}/*.npy (one folder per PSF),
  root/PSF/<T>/<T>_psf_<i>.npy and root/PSF/kernel_code/<T>_code_<i>.npy.

POLED/TOLED (Zhou et al., CVPR 2021) are 8-bit sRGB pairs: root/{split}/{HQ,LQ}/*.png,
paired by file name, or the challenge's root/<fmt>_<split>_{display,gt}.mat stacks.

Every sample is centre-cropped to `size`×`size` (size ≤ 0 keeps full frames, which must then
all have one shape). PSFs are centre-cropped (or zero-padded) to the embedded benchmark's
63×63 and renormalised, so restorers see one kernel size everywhere; where a dataset has PSFs
but no codes, codes are the PCA of its distinct PSFs. Any bad file raises DataError naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image, UnidentifiedImageError

from .dataset import DataError, UDCData
from .formation import tonemap
from .psf import kernel_codes

PSF_SIZE = 63
CODE_DIMS = 5
VERSIONS = {"discnet": "discnet-v1", "poled": "poled-v1", "toled": "toled-v1"}


class _Problems:
    """Raise on the first problem when loading; collect them all when checking."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.items: list[str] = []

    def add(self, path: Path | str, what: str) -> None:
        msg = f"{path}: {what}"
        if self.strict:
            raise DataError(msg)
        self.items.append(msg)


@dataclass
class _Pair:
    id: str
    lq: Path
    hq: Path
    psf: Path | None = None
    code: Path | None = None
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- reading files

def _read_npy(path: Path, problems: _Problems) -> np.ndarray | None:
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - numpy raises many kinds for damaged files
        problems.add(path, f"unreadable .npy ({type(e).__name__}: {e})")
        return None
    if not isinstance(a, np.ndarray) or not (np.issubdtype(a.dtype, np.floating)
                                             or np.issubdtype(a.dtype, np.integer)):
        problems.add(path, f"expected a numeric array, got {getattr(a, 'dtype', type(a))}")
        return None
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        problems.add(path, f"contains {int((~np.isfinite(a)).sum())} NaN/inf values")
        return None
    return a


def _read_hdr(path: Path, problems: _Problems) -> np.ndarray | None:
    a = _read_npy(path, problems)
    if a is None:
        return None
    if a.ndim != 3 or a.shape[-1] != 3:
        problems.add(path, f"expected an HxWx3 HDR image, got shape {a.shape}")
        return None
    # DISCNet clips radiance at zero before tone mapping; small negatives are round-off.
    return np.maximum(a, 0.0).transpose(2, 0, 1)


def _read_png(path: Path, problems: _Problems) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            a = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        problems.add(path, f"unreadable image ({e})")
        return None
    if mode != "RGB" or a.ndim != 3 or a.shape[-1] != 3:
        problems.add(path, f"expected an 8-bit RGB image, got mode {mode} shape {a.shape}")
        return None
    return a.transpose(2, 0, 1).astype(np.float32) / 255.0


def _read_psf(path: Path, problems: _Problems) -> np.ndarray | None:
    a = _read_npy(path, problems)
    if a is None:
        return None
    if a.ndim == 2:
        a = np.stack([a] * 3)
    elif a.ndim == 3 and a.shape[0] == 3:
        pass
    elif a.ndim == 3 and a.shape[-1] == 3:
        a = a.transpose(2, 0, 1)  # DISCNet stores PSFs HxWx3
    else:
        problems.add(path, f"expected a KxK, 3xKxK or KxKx3 PSF, got shape {a.shape}")
        return None
    if a.shape[1] != a.shape[2]:
        problems.add(path, f"PSF is not square: {a.shape[1]}x{a.shape[2]}")
        return None
    if a.min() < -1e-6 * a.max():
        problems.add(path, f"PSF has negative values (min {a.min():.3g})")
        return None
    a = _fit_psf(np.maximum(a, 0.0), PSF_SIZE)
    sums = a.sum(axis=(1, 2))
    if (sums <= 0).any():
        problems.add(path, "PSF has a channel with no energy in its central "
                           f"{PSF_SIZE}x{PSF_SIZE} window")
        return None
    return (a / sums[:, None, None]).astype(np.float32)


def _fit_psf(a: np.ndarray, k: int) -> np.ndarray:
    """Centre-crop or zero-pad a (3, n, n) PSF to (3, k, k) keeping pixel n//2 at the centre."""
    n = a.shape[-1]
    out = np.zeros((3, k, k), dtype=np.float64)
    c, r = n // 2, k // 2
    lo, hi = max(0, c - r), min(n, c + r + 1)
    out[:, r - (c - lo):r + (hi - c), r - (c - lo):r + (hi - c)] = a[:, lo:hi, lo:hi]
    return out


def _read_code(path: Path, problems: _Problems) -> np.ndarray | None:
    a = _read_npy(path, problems)
    if a is None:
        return None
    a = np.squeeze(a) if a.size > 1 else a.reshape(-1)  # DISCNet codes may be (5,) or (1, 5)
    if a.ndim != 1 or a.size == 0:
        problems.add(path, f"expected a 1-D kernel code, got shape {a.shape}")
        return None
    return a.astype(np.float32)


# ----------------------------------------------------------------------------- discovery

def _npys(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.glob("*.npy"))}


def _pair_by_name(lq_dir: Path, hq_dir: Path, pattern: str, problems: _Problems,
                  id_suffix: str = "") -> list[_Pair]:
    lqs = {p.stem: p for p in sorted(lq_dir.glob(pattern))}
    hqs = {p.stem: p for p in sorted(hq_dir.glob(pattern))}
    pairs = []
    for stem in sorted(lqs.keys() | hqs.keys()):
        if stem not in hqs:
            problems.add(lqs[stem], f"no ground-truth partner {hq_dir / lqs[stem].name}")
        elif stem not in lqs:
            problems.add(hqs[stem], f"no input partner {lq_dir / hqs[stem].name}")
        else:
            pairs.append(_Pair(stem + id_suffix, lqs[stem], hqs[stem]))
    return pairs


def _discnet_pairs(root: Path, split: str, problems: _Problems) -> list[_Pair]:
    if (root / "synthetic_data").is_dir():
        return _discnet_release_pairs(root, split, problems)
    base = root / split
    gt, inp = base / "GT", base / "input"
    for d in (gt, inp):
        if not d.is_dir():
            problems.add(d, f"folder missing (expected {split}/GT and {split}/input)")
            return []
    pairs = _pair_by_name(inp, gt, "*.npy", problems)
    split_psf, shared_psf = _npys(base / "PSF"), _npys(root / "PSF")
    codes = _npys(base / "code")
    for p in pairs:
        stem = p.hq.stem
        if stem in split_psf:
            p.psf = split_psf[stem]
        elif stem in shared_psf:
            p.psf = shared_psf[stem]
        elif len(shared_psf) == 1 and not split_psf:
            p.psf = next(iter(shared_psf.values()))
        elif split_psf or shared_psf:
            problems.add(p.lq, "no PSF named after this sample in "
                               f"{base / 'PSF'} or {root / 'PSF'}")
        if stem in codes:
            p.code = codes[stem]
    return pairs


def _discnet_release_pairs(root: Path, split: str, problems: _Problems) -> list[_Pair]:
    gt = root / "synthetic_data" / "GT" / split
    inputs = root / "synthetic_data" / "input"
    if not gt.is_dir():
        problems.add(gt, "folder missing")
        return []
    pairs = []
    folders = sorted(d for d in inputs.glob("*") if (d / split).is_dir()) if inputs.is_dir() else []
    if not folders:
        problems.add(inputs, f"no <psf>_<i>/{split} input folders")
    for d in folders:
        m = re.fullmatch(r"(.+)_(\d+)", d.name)
        if not m:
            problems.add(d, "input folder name is not <psf type>_<index>")
            continue
        kind, pos = m.groups()
        psf = root / "PSF" / kind / f"{kind}_psf_{pos}.npy"
        code = root / "PSF" / "kernel_code" / f"{kind}_code_{pos}.npy"
        if not psf.is_file():
            problems.add(psf, f"PSF file missing for input folder {d.name}")
            psf = None
        for rank, p in enumerate(_pair_by_name(d / split, gt, "*.npy", problems, f"-{d.name}")):
            p.psf, p.code = psf, code if code.is_file() else None
            p.extra["order"] = (rank, len(pairs))
            pairs.append(p)
    # Round robin over the PSF folders, so that `images=N` still spans several PSFs.
    return sorted(pairs, key=lambda p: p.extra["order"])


def _png_pairs(root: Path, split: str, problems: _Problems) -> list[_Pair]:
    hq, lq = root / split / "HQ", root / split / "LQ"
    for d in (hq, lq):
        if not d.is_dir():
            problems.add(d, f"folder missing (expected {split}/HQ and {split}/LQ)")
            return []
    return _pair_by_name(lq, hq, "*.png", problems)


def _mat_files(fmt: str, root: Path, split: str) -> tuple[Path, Path] | None:
    lq, hq = root / f"{fmt}_{split}_display.mat", root / f"{fmt}_{split}_gt.mat"
    return (lq, hq) if lq.is_file() or hq.is_file() else None


def _read_mat_stack(path: Path, problems: _Problems) -> np.ndarray | None:
    if not path.is_file():
        problems.add(path, "file missing (its partner exists)")
        return None
    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # noqa: BLE001 - scipy raises many kinds for damaged files
        problems.add(path, f"unreadable .mat ({type(e).__name__}: {e})")
        return None
    arrays = [v for k, v in mat.items() if not k.startswith("__") and isinstance(v, np.ndarray)]
    if len(arrays) != 1 or arrays[0].ndim != 4 or arrays[0].shape[-1] != 3:
        problems.add(path, "expected one NxHxWx3 image stack, got "
                           f"{[a.shape for a in arrays]}")
        return None
    a = arrays[0]
    if a.dtype != np.uint8:
        problems.add(path, f"expected uint8 images, got {a.dtype}")
        return None
    return a.transpose(0, 3, 1, 2).astype(np.float32) / 255.0


# ----------------------------------------------------------------------------- assembling

def _crop(a: np.ndarray, size: int, path: Path | str, problems: _Problems) -> np.ndarray | None:
    if size <= 0:
        return a
    h, w = a.shape[-2:]
    if h < size or w < size:
        problems.add(path, f"image is {h}x{w}, smaller than the requested size {size}")
        return None
    t, l = (h - size) // 2, (w - size) // 2
    return a[..., t:t + size, l:l + size]


def _read_pairs(fmt: str, pairs: list[_Pair], size: int, problems: _Problems):
    """Yield (id, lq, hq, psf, code, path) for each readable pair, one at a time so that
    checking a large dataset does not hold it in memory."""
    psf_cache: dict[Path, np.ndarray | None] = {}
    code_cache: dict[Path, np.ndarray | None] = {}
    for p in pairs:
        if fmt == "discnet":
            lq, hq = _read_hdr(p.lq, problems), _read_hdr(p.hq, problems)
        else:
            lq, hq = _read_png(p.lq, problems), _read_png(p.hq, problems)
        if lq is None or hq is None:
            continue
        if lq.shape != hq.shape:
            problems.add(p.lq, f"shape {lq.shape[1]}x{lq.shape[2]} differs from its partner "
                               f"{p.hq} ({hq.shape[1]}x{hq.shape[2]})")
            continue
        lq, hq = _crop(lq, size, p.lq, problems), _crop(hq, size, p.hq, problems)
        if lq is None or hq is None:
            continue
        if fmt == "discnet":
            lq, hq = tonemap(lq), tonemap(hq)
        psf = code = None
        if p.psf is not None:
            if p.psf not in psf_cache:
                psf_cache[p.psf] = _read_psf(p.psf, problems)
            psf = psf_cache[p.psf]
            if psf is None:
                continue
        if p.code is not None:
            if p.code not in code_cache:
                code_cache[p.code] = _read_code(p.code, problems)
            code = code_cache[p.code]
            if code is None:
                continue
        yield p.id, lq.astype(np.float32), hq.astype(np.float32), psf, code, p.lq


def _assemble(fmt: str, samples, problems: _Problems) -> UDCData:
    if not samples:
        raise DataError(f"{fmt}: no readable image pairs")
    shape = samples[0][1].shape
    for s in samples:
        if s[1].shape != shape:
            problems.add(s[5], f"shape {s[1].shape[1]}x{s[1].shape[2]} differs from "
                               f"{samples[0][5]} ({shape[1]}x{shape[2]}); pass a crop size")
    has_psf = [s[3] is not None for s in samples]
    if any(has_psf) and not all(has_psf):
        missing = samples[has_psf.index(False)][5]
        problems.add(missing, "has no PSF while other samples do")
    psf = code = None
    if all(has_psf):
        psf = np.stack([s[3] for s in samples])
        have_code = [s[4] is not None for s in samples]
        if all(have_code):
            lens = {s[4].size for s in samples}
            if len(lens) != 1:
                problems.add(samples[0][5], f"kernel codes have different lengths {sorted(lens)}")
            code = np.stack([s[4] for s in samples])
        else:
            code = _pca_codes(psf)
    return UDCData(
        lq=torch.from_numpy(np.stack([s[1] for s in samples])),
        hq=torch.from_numpy(np.stack([s[2] for s in samples])),
        psf=None if psf is None else torch.from_numpy(psf),
        code=None if code is None else torch.from_numpy(code),
        ids=[s[0] for s in samples], name=fmt, version=VERSIONS[fmt],
    )


def _pca_codes(psf: np.ndarray) -> np.ndarray:
    uniq, inverse = np.unique(psf.reshape(len(psf), -1), axis=0, return_inverse=True)
    codes = kernel_codes(uniq.reshape((-1,) + psf.shape[1:]), CODE_DIMS)
    return codes[inverse.reshape(-1)]


def _pairs(fmt: str, root: Path, split: str, problems: _Problems) -> list[_Pair] | tuple:
    if fmt == "discnet":
        return _discnet_pairs(root, split, problems)
    mats = _mat_files(fmt, root, split)
    if mats is not None and not (root / split).is_dir():
        return mats
    return _png_pairs(root, split, problems)


def load_real(fmt: str, root: str, split: str = "test", *, images: int | None = None,
              size: int = 64) -> UDCData:
    if fmt not in VERSIONS:
        raise ValueError(f"unknown dataset format {fmt!r}; choose from {sorted(VERSIONS)}")
    root_p = Path(root)
    if not root_p.is_dir():
        raise DataError(f"{root_p}: dataset root is not a folder")
    problems = _Problems(strict=True)
    pairs = _pairs(fmt, root_p, split, problems)
    if isinstance(pairs, tuple):  # .mat stacks
        return _load_mat(fmt, pairs, split, images, size, problems)
    if not pairs:
        raise DataError(f"{root_p}: no {fmt} image pairs for split {split!r}")
    if images is not None:
        pairs = pairs[:images]
    return _assemble(fmt, list(_read_pairs(fmt, pairs, size, problems)), problems)


def _load_mat(fmt, paths, split, images, size, problems) -> UDCData:
    lq, hq = (_read_mat_stack(p, problems) for p in paths)
    if lq.shape != hq.shape:
        problems.add(paths[0], f"stack shape {lq.shape} differs from {paths[1]} ({hq.shape})")
    n = len(lq) if images is None else min(images, len(lq))
    lq = _crop(lq[:n], size, paths[0], problems)
    hq = _crop(hq[:n], size, paths[1], problems)
    return UDCData(lq=torch.from_numpy(np.ascontiguousarray(lq)),
                   hq=torch.from_numpy(np.ascontiguousarray(hq)), psf=None, code=None,
                   ids=[f"{split}-{i:04d}" for i in range(n)], name=fmt, version=VERSIONS[fmt])


def check_real(fmt: str, root: str) -> list[str]:
    """Every problem in every split of a dataset folder, without stopping at the first."""
    root_p = Path(root)
    if not root_p.is_dir():
        return [f"{root_p}: dataset root is not a folder"]
    problems = _Problems(strict=False)
    splits = _splits(fmt, root_p)
    if not splits:
        return [f"{root_p}: no train/, val/ or test/ split found for format {fmt}"]
    for split in splits:
        pairs = _pairs(fmt, root_p, split, problems)
        if isinstance(pairs, tuple):
            stacks = [_read_mat_stack(p, problems) for p in pairs]
            if all(s is not None for s in stacks) and stacks[0].shape != stacks[1].shape:
                problems.add(pairs[0], f"stack shape {stacks[0].shape} differs from "
                                       f"{pairs[1]} ({stacks[1].shape})")
            continue
        if not pairs and not problems.items:
            problems.add(root_p / split, "no image pairs found")
        for _ in _read_pairs(fmt, pairs, 0, problems):
            pass
    return problems.items


def _splits(fmt: str, root: Path) -> list[str]:
    return [s for s in ("train", "val", "test")
            if (root / s).is_dir() or (fmt == "discnet" and (root / "synthetic_data" / "GT" / s).is_dir())
            or (fmt != "discnet" and _mat_files(fmt, root, s))]


def summarise_real(fmt: str, root: str) -> list[str]:
    """One line per split of what the loader finds: pairs, frame sizes, the value range of
    input and ground truth as restorers see them (DISCNet: tone-mapped), PSFs and codes.
    Unreadable files are left out here; ``check_real`` names them."""
    root_p, problems, lines = Path(root), _Problems(strict=False), []
    for split in _splits(fmt, root_p):
        pairs = _pairs(fmt, root_p, split, problems)
        if isinstance(pairs, tuple):
            lq, hq = (_read_mat_stack(p, problems) for p in pairs)
            if lq is not None and hq is not None:
                lines.append(f"{split}: {len(lq)} pairs from {pairs[0].name} and {pairs[1].name}, "
                             f"{lq.shape[2]}x{lq.shape[3]}, input in [{lq.min():.3f}, {lq.max():.3f}], "
                             f"ground truth in [{hq.min():.3f}, {hq.max():.3f}], no PSF")
            continue
        n, sizes, lo, hi, psfs, codes = 0, set(), [np.inf, np.inf], [-np.inf, -np.inf], set(), 0
        for _, lq, hq, psf, code, _path in _read_pairs(fmt, pairs, 0, problems):
            n += 1
            sizes.add(f"{lq.shape[1]}x{lq.shape[2]}")
            for i, a in enumerate((lq, hq)):
                lo[i], hi[i] = min(lo[i], float(a.min())), max(hi[i], float(a.max()))
            if psf is not None:
                psfs.add(psf.tobytes())
            codes += code is not None
        if not n:
            lines.append(f"{split}: no readable pairs")
            continue
        tone = " (tone-mapped)" if fmt == "discnet" else ""
        psf_note = (f"{len(psfs)} distinct PSFs ({PSF_SIZE}x{PSF_SIZE} after fitting), "
                    f"{codes} with kernel codes" if psfs else "no PSF")
        lines.append(f"{split}: {n} pairs, {', '.join(sorted(sizes))}, input{tone} in [{lo[0]:.3f}, "
                     f"{hi[0]:.3f}], ground truth in [{lo[1]:.3f}, {hi[1]:.3f}], {psf_note}")
    return lines
