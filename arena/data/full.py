"""``embedded-full``: the embedded benchmark's test photographs whole, at full resolution.

The crops of ``embedded`` (arena/data/embedded.py) are taken from photographs enlarged to five
times the crop side, so a 512 px crop would be a 5x upsampled detail. Here each test photograph
is resized once so its short side is ``size`` plus the PSF's context (coffee 400x600 and rocket
427x640 grow about 1.4x at 512 px; hubble 872x1000 shrinks), centre-cropped to ``size`` x
``size`` and degraded by each display PSF in turn, with the same highlight gains, exposures and
sensor noise ranges as the crops: 3 photographs x 9 PSFs = 27 images. The crops are untouched
(their values and hashes do not depend on this module). Generation is deterministic per seed and
held in memory for the process (about 3 s at 512 px).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .dataset import UDCData
from .embedded import (EXPOSURE, HIGHLIGHT_GAIN, PHOTONS, PHOTOS, PSF_SIZE, READ_NOISE, CODE_DIMS,
                       _prepared_photo)
from .formation import form_udc
from .psf import kernel_codes, psf_bank

VERSION = "embedded-full-v1"
_FULL_ID = 3  # beside the crops' split ids (1 train, 2 test) in each SeedSequence


@functools.lru_cache(maxsize=4)
def generate_full(size: int, seed: int) -> dict[str, np.ndarray]:
    bank, names = psf_bank(PSF_SIZE)
    codes = kernel_codes(bank, CODE_DIMS)
    margin = PSF_SIZE // 2
    region = size + 2 * margin
    lq, hq, index, ids = [], [], [], []
    photos = list(PHOTOS["test"])
    for slot in range(len(bank)):
        for p, name in enumerate(photos):
            psf = (slot + p) % len(bank)
            rng = np.random.default_rng(np.random.SeedSequence([seed, _FULL_ID, p, slot]))
            scene, weight, _ = _prepared_photo("test", name, region)
            h, w = weight.shape
            top, left = (h - region) // 2, (w - region) // 2
            sl = (slice(top, top + region), slice(left, left + region))
            gain = float(np.exp(rng.uniform(*np.log(HIGHLIGHT_GAIN))))
            x = scene[:, sl[0], sl[1]] * (1.0 + (gain - 1.0) * weight[sl]) * float(rng.uniform(*EXPOSURE))
            a, b = form_udc(x, bank[psf], rng, margin=margin, photons=float(np.exp(rng.uniform(*np.log(PHOTONS)))),
                            read_noise=float(rng.uniform(*READ_NOISE)))
            lq.append(a), hq.append(b), index.append(psf), ids.append(f"{name}-full-{names[psf]}")
    return {"lq": np.stack(lq), "hq": np.stack(hq), "psf_bank": bank, "code_bank": codes,
            "psf_index": np.array(index), "ids": np.array(ids)}


def load_full(split: str = "test", *, images: int | None = None, size: int = 512, seed: int = 0) -> UDCData:
    if split != "test":
        raise ValueError("embedded-full has a test split only (the crops of 'embedded' train)")
    if size < 64:
        raise ValueError(f"embedded-full is for full-resolution images: size must be at least 64, got {size}")
    a = generate_full(size, seed)
    n = len(a["lq"]) if images is None else min(images, len(a["lq"]))
    idx = torch.from_numpy(a["psf_index"][:n].astype(np.int64))
    return UDCData(lq=torch.from_numpy(a["lq"][:n].copy()), hq=torch.from_numpy(a["hq"][:n].copy()),
                   psf=torch.from_numpy(a["psf_bank"])[idx].float(), code=torch.from_numpy(a["code_bank"])[idx].float(),
                   ids=[str(i) for i in a["ids"][:n]], name="embedded-full", version=VERSION)
