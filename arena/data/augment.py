"""Training pairs for restorers: the training split, held-out validation, augmentation and
resynthesis of fresh UDC pairs from the training scenes."""

from __future__ import annotations

import numpy as np
import torch

from arena.api import ConfigError
from arena.data import UDCData, form_udc, inverse_tonemap, load_data
from arena.data.embedded import PHOTONS, READ_NOISE
from arena.data.scenes import dead_leaves


def training_data(data: str, size: int, data_seeds: int, data_root: str | None) -> list[UDCData]:
    """The training split: for the embedded benchmark, one draw of crops and noise per seed."""
    if data == "embedded":
        return [load_data("embedded", "train", size=size, seed=s) for s in range(data_seeds)]
    return [load_data(data, "train", root=data_root, size=size)]


def concat(parts: list[UDCData]) -> UDCData:
    def cat(key: str) -> torch.Tensor | None:
        if getattr(parts[0], key) is None:
            return None
        return torch.cat([getattr(p, key) for p in parts])

    return UDCData(lq=cat("lq"), hq=cat("hq"), psf=cat("psf"), code=cat("code"),
                   ids=[i for p in parts for i in p.ids], name=parts[0].name,
                   version=parts[0].version)


def split_validation(parts: list[UDCData], n_val: int, seed: int) -> tuple[UDCData, UDCData]:
    """Hold out n_val images of the first part (always the same ones for a seed)."""
    first = parts[0]
    n_val = min(n_val, len(first) // 5)
    perm = torch.randperm(len(first), generator=torch.Generator().manual_seed(seed)).tolist()
    val = first.subset(sorted(perm[:n_val]))
    return concat([first.subset(sorted(perm[n_val:]))] + parts[1:]), val


def psf_invariant_rot180(data: UDCData) -> bool:
    """True when every PSF is point-symmetric.

    Rotating a pair by 180 degrees rotates its PSF too; diffraction PSFs |FFT(pupil)|^2 of a
    real pupil are point-symmetric, so the kernel code stays valid. Flips and 90-degree turns
    would change the PSF's orientation and make the code lie.
    """
    if data.psf is None:
        return False
    psf = data.psf
    return bool(((psf - psf.flip(-1, -2)).abs().amax() <= 1e-6 * psf.abs().amax()).item())


def augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, dihedral: bool,
            rot180: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, a random element of the dihedral group (or only 0/180 degree turns)."""
    if not (dihedral or rot180) or len(x) == 0:
        return x, y
    xs, ys = [], []
    for i in range(x.shape[0]):
        if dihedral:
            k = int(torch.randint(4, (1,), generator=gen))
            flip = bool(torch.randint(2, (1,), generator=gen))
        else:
            k, flip = 2 * int(torch.randint(2, (1,), generator=gen)), False
        a, b = x[i], y[i]
        if flip:
            a, b = a.flip(-1), b.flip(-1)
        xs.append(torch.rot90(a, k, (-2, -1)))
        ys.append(torch.rot90(b, k, (-2, -1)))
    return torch.stack(xs), torch.stack(ys)


def random_crop(x: torch.Tensor, y: torch.Tensor, crop: int, gen: torch.Generator):
    h, w = x.shape[-2:]
    if crop >= min(h, w):
        return x, y
    xs, ys = [], []
    for i in range(x.shape[0]):
        top = int(torch.randint(h - crop + 1, (1,), generator=gen))
        left = int(torch.randint(w - crop + 1, (1,), generator=gen))
        xs.append(x[i, :, top:top + crop, left:left + crop])
        ys.append(y[i, :, top:top + crop, left:left + crop])
    return torch.stack(xs), torch.stack(ys)


class Resynthesis:
    """Fresh UDC pairs from the training scenes, degraded again with the arena's formation model.

    The ground truth is hq = φ(x), so φ⁻¹(hq) is the exact HDR scene of the crop. Re-exposing
    it, changing its white balance, turning it and convolving it with any PSF of the set gives
    pairs that are as physical as the originals (the crop's surroundings come from reflection)
    but cover colours and exposures nine photographs do not: without them a restorer learns
    that every smooth region is flare and paints a test photograph's blue sky black. The
    scene is turned before the PSF is applied, so PSF codes stay exact for every turn and flip.

    A share ``procedural`` of the pairs use dead-leaves scenes (arena.data.scenes) instead,
    drawn with the scene context around the frame that the PSF spreads light from. Off by
    default: on the embedded benchmark it did not help (NAFNet, 3000 steps, 3/4 of each batch
    resynthesised: 23.84 dB on the test split with half of those dead leaves, 23.86 without);
    it is there for real datasets with few scenes.
    """

    GAIN = (0.5, 2.0)  # exposure, log-uniform
    WHITE = (0.6, 1.6)  # per-channel gain, log-uniform

    def __init__(self, data: UDCData, procedural: float = 0.0):
        if data.psf is None:
            raise ConfigError(f"dataset '{data.name}' has no PSFs to synthesise pairs with")
        if not 0.0 <= procedural <= 1.0:
            raise ConfigError(f"procedural share must be in [0, 1], got {procedural}")
        self.data = data
        self.procedural = procedural
        _, first = np.unique(data.code.numpy(), axis=0, return_index=True)
        self.bank = data.psf[torch.as_tensor(sorted(first))].double().numpy()
        self.codes = data.code[torch.as_tensor(sorted(first))]

    def pairs(self, idx: torch.Tensor, gen: torch.Generator):
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=gen)))
        lqs, hqs, codes = [], [], []
        size, margin = self.data.hq.shape[-1], self.bank.shape[-1] // 2
        for i in idx.tolist():
            if self.procedural and rng.uniform() < self.procedural:
                x, m = dead_leaves(rng, size, margin), margin
            else:
                # φ⁻¹ diverges at 1; embedded scenes stay below φ = 0.994, real data may not.
                x, m = inverse_tonemap(np.minimum(self.data.hq[i].double().numpy(), 0.999)), 0
                x = np.rot90(x, int(rng.integers(4)), axes=(1, 2))
                if rng.integers(2):
                    x = x[:, :, ::-1]
            gain = np.exp(rng.uniform(*np.log(self.GAIN)) + rng.uniform(*np.log(self.WHITE), 3))
            j = int(rng.integers(len(self.bank)))
            lq, hq = form_udc(np.ascontiguousarray(x) * gain[:, None, None], self.bank[j], rng,
                              margin=m, photons=float(np.exp(rng.uniform(*np.log(PHOTONS)))),
                              read_noise=float(rng.uniform(*READ_NOISE)))
            lqs.append(torch.from_numpy(lq))
            hqs.append(torch.from_numpy(hq))
            codes.append(self.codes[j])
        return torch.stack(lqs), torch.stack(hqs), torch.stack(codes)


def make_batch(train: UDCData, batch: int, crop: int, gen: torch.Generator, dihedral: bool,
               rot180: bool, synth: Resynthesis | None, synth_share: float):
    """A training batch (lq, hq, code): resynthesised pairs first, then stored ones."""
    n_syn = int(round(batch * synth_share)) if synth is not None else 0
    idx = torch.randint(len(train), (batch,), generator=gen)
    lq, hq = augment(train.lq[idx[n_syn:]], train.hq[idx[n_syn:]], gen, dihedral, rot180)
    code = None if train.code is None else train.code[idx[n_syn:]]
    if n_syn:
        s_lq, s_hq, s_code = synth.pairs(idx[:n_syn], gen)
        lq, hq = torch.cat([s_lq, lq]), torch.cat([s_hq, hq])
        code = None if code is None else torch.cat([s_code, code])
    lq, hq = random_crop(lq, hq, crop, gen)
    return lq, hq, code
