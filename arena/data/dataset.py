"""The in-memory dataset the arena evaluates on, and the error its loaders raise."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from arena.errors import ArenaError


class DataError(ArenaError, ValueError):
    """A dataset file is missing, unreadable or malformed; the message names the file."""


def data_hash(lq: torch.Tensor, hq: torch.Tensor, psf: torch.Tensor | None,
              code: torch.Tensor | None) -> str:
    """sha256 of the tensors' shapes and float32 bytes, in the order lq, hq, psf, code."""
    h = hashlib.sha256()
    for key, t in (("lq", lq), ("hq", hq), ("psf", psf), ("code", code)):
        h.update(key.encode())
        if t is None:
            h.update(b"none")
            continue
        t = t.detach().to("cpu", torch.float32).contiguous()
        # Shapes go in too, so (2, 3) and (3, 2) tensors with equal bytes differ.
        h.update(repr(tuple(t.shape)).encode())
        h.update(memoryview(t.numpy()).cast("B"))
    return h.hexdigest()


@dataclass
class UDCData:
    """Paired UDC images in the tone-mapped domain, (N, 3, H, W) float32 in [0, 1].

    `psf` (N, 3, K, K) has channels that sum to one; `code` (N, C) is its PCA kernel code.
    Both are None when the dataset has no PSF. `hash` is filled in when left empty.

    The scene threat model needs what the images were formed from, kept by the embedded
    benchmark and None elsewhere: `scene` (N, 3, H+2m, W+2m), the HDR scene in linear radiance
    (1.0 = saturation) with the context m = K//2 the PSF spreads into the frame; `noise`
    (N, 3, H, W), the sensor noise realisation lq was formed with (added to scene ∗ psf before
    clipping); `photons` and `read_noise` (N,), each sample's sensor. They are not part of
    `hash`: they are fixed by the same generator as lq, and existing results keep their keys.
    """

    lq: torch.Tensor
    hq: torch.Tensor
    psf: torch.Tensor | None
    code: torch.Tensor | None
    ids: list[str]
    name: str
    version: str
    hash: str = ""
    scene: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    photons: torch.Tensor | None = None
    read_noise: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.lq.shape[0]
        if self.lq.ndim != 4 or self.lq.shape[1] != 3 or self.lq.shape != self.hq.shape:
            raise ValueError(f"lq {tuple(self.lq.shape)} and hq {tuple(self.hq.shape)} "
                             "must both be (N, 3, H, W)")
        for key, t in (("psf", self.psf), ("code", self.code)):
            if t is not None and t.shape[0] != n:
                raise ValueError(f"{key} has {t.shape[0]} rows for {n} images")
        scene = (self.scene, self.noise, self.photons, self.read_noise)
        if any(t is not None for t in scene) and (any(t is None for t in scene) or self.psf is None):
            raise ValueError("scene, noise, photons and read_noise come together, with a psf")
        for key, t in zip(("scene", "noise", "photons", "read_noise"), scene):
            if t is not None and t.shape[0] != n:
                raise ValueError(f"{key} has {t.shape[0]} rows for {n} images")
        if self.noise is not None and self.noise.shape != self.lq.shape:
            raise ValueError(f"noise {tuple(self.noise.shape)} must match lq {tuple(self.lq.shape)}")
        if len(self.ids) != n:
            raise ValueError(f"{len(self.ids)} ids for {n} images")
        if not self.hash:
            self.hash = data_hash(self.lq, self.hq, self.psf, self.code)

    def __len__(self) -> int:
        return int(self.lq.shape[0])

    def subset(self, idx: list[int]) -> "UDCData":
        ix = torch.as_tensor(list(idx), dtype=torch.long)
        return UDCData(
            lq=self.lq[ix], hq=self.hq[ix],
            psf=None if self.psf is None else self.psf[ix],
            code=None if self.code is None else self.code[ix],
            ids=[self.ids[i] for i in ix.tolist()],
            name=self.name, version=self.version,
            **{k: None if getattr(self, k) is None else getattr(self, k)[ix]
               for k in ("scene", "noise", "photons", "read_noise")},
        )

    @property
    def has_scenes(self) -> bool:
        return self.scene is not None
