"""Training pairs for restorers: the training scenes, held-out validation photographs,
augmentation, and fresh UDC pairs rendered in batches on the training device.

Two sources of fresh pairs share one renderer (``render``, the torch formation model of
:mod:`arena.data.formation` with Poisson–Gaussian noise): ``ScenePool`` cuts crops of any size
(up to 256 px at the 64 px benchmark's scale) with their true surroundings out of the embedded
benchmark's training photographs, ``Resynthesis`` re-degrades stored pairs of a dataset that
has no photographs behind it (a real one). Every random number is drawn from the caller's CPU
generator, or from a device generator seeded from it, so a seed gives the same batches.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from arena.api import ConfigError
from arena.data import UDCData, load_data
from arena.data.embedded import (EXPOSURE, HIGHLIGHT_GAIN, PHOTONS, READ_NOISE, _prepared_photo,
                                 _short_side, available_photos)
from arena.data.formation import SATURATION, inverse_tonemap, tonemap, torch_convolve
from arena.data.scenes import dead_leaves

#: The training scene pools of the embedded benchmark: the train split's nine photographs, or
#: those and the "extra" ones that installed packages ship (arena/data/embedded.py).
SCENES = {"train": ("train",), "train+extra": ("train", "extra")}


def training_data(data: str, size: int, data_seeds: int, data_root: str | None,
                  scenes: str = "train") -> list[UDCData]:
    """The stored training pairs: for the embedded benchmark, one draw of crops and noise per
    seed of each split of the scene pool."""
    if data != "embedded":
        return [load_data(data, "train", root=data_root, size=size)]
    parts = [load_data("embedded", split, size=size, seed=s)
             for s in range(data_seeds) for split in SCENES[scenes]]
    return [p for p in parts if len(p)]


def validation_data(data: str, size: int) -> UDCData | None:
    """Held-out photographs for checkpoint selection (embedded: the "val" split, seed 0), or
    None where the dataset has none; never the test split."""
    return load_data("embedded", "val", size=size, seed=0) if data == "embedded" else None


def concat(parts: list[UDCData]) -> UDCData:
    def cat(key: str) -> torch.Tensor | None:
        if getattr(parts[0], key) is None:
            return None
        return torch.cat([getattr(p, key) for p in parts])

    return UDCData(lq=cat("lq"), hq=cat("hq"), psf=cat("psf"), code=cat("code"),
                   ids=[i for p in parts for i in p.ids], name=parts[0].name,
                   version=parts[0].version)


def split_validation(parts: list[UDCData], n_val: int, seed: int) -> tuple[UDCData, UDCData]:
    """Hold out n_val images of the first part (always the same ones for a seed): for datasets
    without held-out photographs, whose validation crops then come from training scenes."""
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


def dihedral_transform(x: torch.Tensor, turns: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Per image i of a square batch, a horizontal flip where ``flips[i]``, then ``turns[i]``
    quarter turns."""
    flips = flips.to(x.device).view(-1, 1, 1, 1)
    x = torch.where(flips, x.flip(-1), x)
    out = x.clone()
    for k in (1, 2, 3):
        sel = (turns == k).nonzero().flatten().tolist()
        if sel:
            out[sel] = torch.rot90(x[sel], k, (-2, -1))
    return out


def augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, dihedral: bool,
            rot180: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, a random element of the dihedral group (or only 0/180 degree turns)."""
    n = x.shape[0]
    if not (dihedral or rot180) or n == 0:
        return x, y
    if dihedral and x.shape[-1] == x.shape[-2]:
        turns = torch.randint(4, (n,), generator=gen)
        flips = torch.randint(2, (n,), generator=gen).bool()
    else:  # half turns only (and on non-square images, where quarter turns change the shape)
        turns, flips = 2 * torch.randint(2, (n,), generator=gen), torch.zeros(n, dtype=torch.bool)
    return dihedral_transform(x, turns, flips), dihedral_transform(y, turns, flips)


def random_crop(x: torch.Tensor, y: torch.Tensor, crop: int, gen: torch.Generator):
    h, w = x.shape[-2:]
    if crop >= min(h, w) or len(x) == 0:
        return x, y
    tops = torch.randint(h - crop + 1, (len(x),), generator=gen).tolist()
    lefts = torch.randint(w - crop + 1, (len(x),), generator=gen).tolist()
    xs = [x[i, :, t:t + crop, u:u + crop] for i, (t, u) in enumerate(zip(tops, lefts))]
    ys = [y[i, :, t:t + crop, u:u + crop] for i, (t, u) in enumerate(zip(tops, lefts))]
    return torch.stack(xs), torch.stack(ys)


def _log_uniform(bounds, shape, gen: torch.Generator) -> torch.Tensor:
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    return torch.exp(lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64))


def _uniform(bounds, shape, gen: torch.Generator) -> torch.Tensor:
    return bounds[0] + (bounds[1] - bounds[0]) * torch.rand(shape, generator=gen,
                                                            dtype=torch.float64)


def reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """numpy's "reflect" padding of the last two axes, for any pad (torch's needs pad < side)."""
    if pad <= 0:
        return x
    idx = []
    for n in x.shape[-2:]:
        i = torch.arange(-pad, n + pad, device=x.device).abs()
        period = 2 * (n - 1)
        i = i % period if period else torch.zeros_like(i)
        idx.append(torch.where(i >= n, period - i, i))
    return x[..., idx[0][:, None], idx[1][None, :]]


def device_generator(gen: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded by a draw from the CPU generator ``gen``."""
    seed = int(torch.randint(2**62, (1,), generator=gen))
    return torch.Generator(device=device).manual_seed(seed)


def render(x: torch.Tensor, psf: torch.Tensor, photons: torch.Tensor, read_noise: torch.Tensor,
           gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(lq, hq) of HDR scenes x (N, 3, S+2r, S+2r) with r = K//2 of context, psf (N, 3, K, K):
    lq = φ(C(x ∗ k + n)) with Poisson shot noise for ``photons`` (N,) at full well on the
    unclipped signal plus Gaussian read noise (N,), hq = φ(x) of the frame; float32, one batch
    on x's device, noise from ``gen`` (a generator on that device)."""
    r = psf.shape[-1] // 2
    y = torch_convolve(x, psf, margin=r)
    photons = photons.to(y.device, y.dtype).view(-1, 1, 1, 1)
    read = read_noise.to(y.device, y.dtype).view(-1, 1, 1, 1)
    y = torch.poisson(y * photons, generator=gen) / photons
    y = y + read * torch.randn(y.shape, generator=gen, device=y.device, dtype=y.dtype)
    lq = tonemap(y.clamp(0.0, SATURATION))
    hq = tonemap(x[..., r:x.shape[-2] - r, r:x.shape[-1] - r].clamp_min(0.0))
    return lq.float(), hq.float()


class _Bank:
    """The distinct PSFs of a dataset with their kernel codes."""

    def __init__(self, data: UDCData, device: torch.device):
        if data.psf is None:
            raise ConfigError(f"dataset '{data.name}' has no PSFs to synthesise pairs with")
        _, first = np.unique(data.code.numpy(), axis=0, return_index=True)
        keep = torch.as_tensor(sorted(first))
        self.psf = data.psf[keep].to(device, torch.float32)
        self.codes = data.code[keep]

    def __len__(self) -> int:
        return len(self.psf)

    def margin(self) -> int:
        return self.psf.shape[-1] // 2

    def draw(self, n: int, gen: torch.Generator):
        """n PSFs, their codes, and a sensor each (photons at full well, read noise)."""
        j = torch.randint(len(self), (n,), generator=gen)
        return (self.psf[j.to(self.psf.device)], self.codes[j], _log_uniform(PHOTONS, n, gen),
                _uniform(READ_NOISE, n, gen))


class Resynthesis:
    """Fresh UDC pairs from the stored pairs of a dataset, degraded again by the formation model.

    The ground truth is hq = φ(x), so φ⁻¹(hq) is the exact HDR scene of the crop. Re-exposing
    it, changing its white balance, turning it and convolving it with any PSF of the set gives
    pairs that are as physical as the originals (the crop's surroundings come from reflection)
    but cover colours and exposures the stored scenes do not: without them a restorer learns
    that every smooth region is flare and paints a test photograph's blue sky black. The
    scene is turned before the PSF is applied, so PSF codes stay exact for every turn and flip.

    A share ``procedural`` of the pairs use dead-leaves scenes (arena.data.scenes) instead,
    drawn with the scene context around the frame that the PSF spreads light from. Off by
    default: on the embedded benchmark it did not help (NAFNet, 3000 steps, 3/4 of each batch
    resynthesised: 23.84 dB on the test split with half of those dead leaves, 23.86 without);
    it is there for real datasets with few scenes. The embedded benchmark trains from
    ``ScenePool`` instead, which has the photographs themselves.
    """

    GAIN = (0.5, 2.0)  # exposure, log-uniform
    WHITE = (0.6, 1.6)  # per-channel gain, log-uniform

    def __init__(self, data: UDCData, procedural: float = 0.0, device: str | torch.device = "cpu"):
        if not 0.0 <= procedural <= 1.0:
            raise ConfigError(f"procedural share must be in [0, 1], got {procedural}")
        self.bank = _Bank(data, torch.device(device))
        self.data = data
        self.procedural = procedural

    @property
    def codes(self) -> torch.Tensor:
        return self.bank.codes

    def pairs(self, idx: torch.Tensor, gen: torch.Generator, side: int | None = None):
        """Pairs (lq, hq, code) at the stored side, one per index of a stored pair."""
        n, size, r = len(idx), self.data.hq.shape[-1], self.bank.margin()
        dev = self.bank.psf.device
        leaves = (torch.rand(n, generator=gen) < self.procedural).tolist()
        turns = torch.randint(4, (n,), generator=gen)
        flips = torch.randint(2, (n,), generator=gen).bool()
        gain = _log_uniform(self.GAIN, (n, 1), gen) * _log_uniform(self.WHITE, (n, 3), gen)
        psf, code, photons, read = self.bank.draw(n, gen)
        # φ⁻¹ diverges at 1; embedded scenes stay below φ = 0.994, real data may not.
        hq = self.data.hq[idx.to(self.data.hq.device)].to(dev, torch.float64)
        x = reflect_pad(dihedral_transform(inverse_tonemap(hq.clamp_max(0.999)), turns, flips), r)
        if any(leaves):
            rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=gen)))
            for i in (i for i, on in enumerate(leaves) if on):
                x[i] = torch.from_numpy(dead_leaves(rng, size, r)).to(dev)
        x = x * gain.to(dev)[:, :, None, None]
        lq, hq = render(x.float(), psf, photons, read, device_generator(gen, dev))
        return lq, hq, code


class ScenePool:
    """Fresh UDC pairs cut out of the embedded benchmark's training photographs on the device.

    Each pair is what the embedded generator (arena/data/embedded.py) makes, drawn afresh: a
    photograph of the pool at the benchmark's scale for ``size`` (so a 64 px test crop and a
    256 px training crop show objects at the same size), a crop with its true surroundings (a
    third aimed near a light source), HDR highlights, an exposure, then on top Resynthesis's
    exposure and white-balance jitter, a turn or flip of the scene before the PSF (codes stay
    exact), any PSF of the bank, sensor noise. Crops can be as large as the photographs allow
    at that scale (258 px at size 64); every crop position, not nine per photograph and PSF.
    """

    def __init__(self, splits: tuple[str, ...], size: int, data: UDCData,
                 device: str | torch.device = "cpu"):
        dev = torch.device(device)
        self.bank = _Bank(data, dev)
        r = self.bank.margin()
        short = _short_side(size, r)
        self.photos = [(s, name) for s in splits for name in available_photos(s)]
        self.scenes, self.weights, self.bright = [], [], []
        for split, name in self.photos:
            scene, weight, bright = _prepared_photo(split, name, short)
            self.scenes.append(torch.tensor(scene, dtype=torch.float32, device=dev))
            self.weights.append(torch.tensor(weight, dtype=torch.float32, device=dev))
            self.bright.append(bright)
        self.max_crop = min(min(w.shape) for w in self.weights) - 2 * r

    @property
    def codes(self) -> torch.Tensor:
        return self.bank.codes

    def check_crop(self, crop: int) -> None:
        if crop > self.max_crop:
            raise ConfigError(f"crop {crop} is larger than the training photographs allow at "
                              f"this size ({self.max_crop} px)")

    def _region(self, p: int, side: int, aim: bool, gen: torch.Generator) -> tuple[int, int]:
        h, w = self.weights[p].shape
        region, bright = side + 2 * self.bank.margin(), self.bright[p]
        if aim and len(bright):
            b = bright[int(torch.randint(len(bright), (1,), generator=gen))]
            jitter = torch.randint(-side // 3, side // 3 + 1, (2,), generator=gen).tolist()
            cy, cx = int(b[0]) + jitter[0], int(b[1]) + jitter[1]
            return (min(max(cy - region // 2, 0), h - region),
                    min(max(cx - region // 2, 0), w - region))
        return (int(torch.randint(h - region + 1, (1,), generator=gen)),
                int(torch.randint(w - region + 1, (1,), generator=gen)))

    def pairs(self, idx: torch.Tensor, gen: torch.Generator, side: int):
        """len(idx) pairs (lq, hq, code) of ``side`` px (idx only counts them)."""
        self.check_crop(side)
        n, r = len(idx), self.bank.margin()
        region = side + 2 * r
        dev = self.bank.psf.device
        photo = torch.randint(len(self.photos), (n,), generator=gen).tolist()
        aim = (torch.rand(n, generator=gen) < 1 / 3).tolist()
        crops, weights = [], []
        for p, a in zip(photo, aim):
            top, left = self._region(p, side, a, gen)
            crops.append(self.scenes[p][:, top:top + region, left:left + region])
            weights.append(self.weights[p][top:top + region, left:left + region])
        highlight = _log_uniform(HIGHLIGHT_GAIN, n, gen).float().to(dev).view(-1, 1, 1, 1)
        exposure = (_uniform(EXPOSURE, (n, 1), gen) * _log_uniform(Resynthesis.GAIN, (n, 1), gen)
                    * _log_uniform(Resynthesis.WHITE, (n, 3), gen)).float().to(dev)
        turns = torch.randint(4, (n,), generator=gen)
        flips = torch.randint(2, (n,), generator=gen).bool()
        psf, code, photons, read = self.bank.draw(n, gen)
        x = torch.stack(crops) * (1.0 + (highlight - 1.0) * torch.stack(weights)[:, None])
        x = dihedral_transform(x * exposure[:, :, None, None], turns, flips)
        lq, hq = render(x, psf, photons, read, device_generator(gen, dev))
        return lq, hq, code


def make_batch(train: UDCData, batch: int, crop: int, gen: torch.Generator, dihedral: bool,
               rot180: bool, synth: Resynthesis | ScenePool | None, synth_share: float):
    """A training batch (lq, hq, code): fresh pairs first, then stored ones, cropped to ``crop``
    (fresh pairs are drawn at the stored side, or at ``crop`` when it is larger and the whole
    batch is fresh)."""
    n_syn = int(round(batch * synth_share)) if synth is not None else 0
    idx = torch.randint(len(train), (batch,), generator=gen)
    keep = idx[n_syn:].to(train.lq.device)
    lq, hq = augment(train.lq[keep], train.hq[keep], gen, dihedral, rot180)
    code = None if train.code is None else train.code[idx[n_syn:]]
    if n_syn:
        side = max(crop, train.hq.shape[-1])
        s_lq, s_hq, s_code = synth.pairs(idx[:n_syn], gen, side)
        if n_syn == batch:  # nothing stored to join (and perhaps of another side)
            lq, hq, code = s_lq, s_hq, None if code is None else s_code
        else:
            lq, hq = torch.cat([s_lq, lq]), torch.cat([s_hq, hq])
            code = None if code is None else torch.cat([s_code, code])
    lq, hq = random_crop(lq, hq, crop, gen)
    return lq, hq, code
