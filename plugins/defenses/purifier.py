"""The diffusion purifier of the diffpure plugin: a small DDPM trained on UDC inputs, its
samplers and its trainer (``arena train-purifier``, registered by the diffpure plugin).

DiffPure (Nie et al., ICML 2022) diffuses an input to a noise level t* and runs the reverse
process back to t = 0, washing out a small adversarial perturbation with the added noise while
the denoiser pulls the image back towards the data it was trained on. Here that data is the
embedded benchmark's UDC inputs (``lq`` of the train split), so purified inputs stay UDC images
(flare, blur and all) that the restorer knows how to handle.

The network is a diffusers ``UNet2DModel`` predicting the noise (epsilon), on the 1000-step
linear schedule of Ho et al. (2020), built from a config dict and loaded from safetensors (never
from a hub, never with pickle). Images live in [-1, 1] inside this module, [0, 1] outside.

Samplers. Both use one update, the generalised step of DDIM (Song et al., ICLR 2021, eq. 12 and
16) with the predicted clean image clipped to [-1, 1] and the noise estimate re-derived from it:
with ``eta = 1`` over consecutive timesteps it is exactly DDPM's ancestral step (diffusers'
``DDPMScheduler.step``), with ``eta = 0`` over strided timesteps it is DDIM (diffusers'
``DDIMScheduler.step`` with ``use_clipped_model_output``); a test pins both equalities. The step is
written here rather than called from the schedulers because DiffPure starts the reverse process
part-way (``DDIMScheduler`` only strides the full schedule by ``1000 // num_inference_steps``) and
because checkpointed gradients need the step's noise passed in, not drawn inside
(``DDPMScheduler.step`` draws its own). The noise schedule itself is diffusers'.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from arena.weights import load_weights, read_manifest, save_weights

if TYPE_CHECKING:  # pragma: no cover
    from arena.data import UDCData

#: UNet2DModel arguments of the shipped purifier: ~1M parameters, three levels, no attention,
#: so it is fully convolutional and runs on any size that is a multiple of 4.
DEFAULT_UNET: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 1,
    "block_out_channels": [32, 64, 64],
    "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "UpBlock2D"],
    "norm_num_groups": 8,
    "add_attention": False,
}
#: The noise schedule (DDPMScheduler config): Ho et al.'s linear betas over 1000 steps.
DEFAULT_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 1e-4,
    "beta_end": 0.02,
}


def build_unet(config: dict[str, Any]) -> torch.nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel(**config)


def alphas_cumprod(schedule: dict[str, Any]) -> torch.Tensor:
    from diffusers import DDPMScheduler

    return DDPMScheduler(**schedule).alphas_cumprod.to(torch.float32)


def timesteps(t_start: int, steps: int) -> list[int]:
    """``steps`` descending timesteps from ``t_start``; the last step jumps to the clean image."""
    if steps >= t_start + 1:
        return list(range(t_start, -1, -1))
    ts = np.unique(np.round(np.linspace(t_start, 0, steps + 1)[:-1]).astype(int))
    return [int(t) for t in ts[::-1]]


def reverse_step(x: torch.Tensor, eps: torch.Tensor, a_t: torch.Tensor, a_prev: torch.Tensor,
                 eta: float, noise: torch.Tensor | None) -> torch.Tensor:
    """One generalised DDIM step from noise level ``a_t`` to ``a_prev`` (cumulative alphas)."""
    x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
    eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
    out = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp_min(0).sqrt() * eps
    if noise is not None:
        out = out + sigma * noise
    return out


def _randn(shape, generator: torch.Generator, device) -> torch.Tensor:
    # Drawn on the generator's device (the CPU) and moved, so a seed means the same everywhere.
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def _window(size: int, overlap: int, device) -> torch.Tensor:
    """1-D blending weights: a ramp over ``overlap`` pixels at each end, never zero."""
    i = torch.arange(size, device=device, dtype=torch.float32)
    return torch.minimum(i + 1, size - i).clamp(max=overlap + 1.0) / (overlap + 1)


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


@dataclass
class Purifier:
    """A trained noise predictor with its schedule; ``purify`` is DiffPure on [0, 1] images."""

    unet: torch.nn.Module
    alphas_cumprod: torch.Tensor
    size: int
    max_timestep: int
    manifest: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Purifier:
        manifest = read_manifest(path)
        unet = build_unet(manifest["unet"])
        load_weights(unet, path)
        unet.eval().requires_grad_(False).to(device)
        return cls(unet, alphas_cumprod(manifest["schedule"]).to(device), int(manifest["size"]),
                   int(manifest["max_timestep"]), manifest)

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def num_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def start(self, t_star: float) -> int:
        """The timestep index of noise level ``t_star`` (fraction of the schedule)."""
        t = max(0, round(t_star * self.num_timesteps) - 1)
        if t > self.max_timestep:
            raise ValueError(f"t_star {t_star} is beyond the purifier's training range "
                             f"(up to {(self.max_timestep + 1) / self.num_timesteps:g})")
        return t

    def _eps_whole(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return self.unet(x, t.expand(x.shape[0])).sample[..., :h, :w]

    def eps(self, x: torch.Tensor, t: int, tile: int, overlap: int) -> torch.Tensor:
        """Predicted noise; images larger than ``tile`` are cut into overlapping tiles, blended."""
        tt = torch.tensor([t], device=x.device)
        n, c, h, w = x.shape
        if h <= tile and w <= tile:
            return self._eps_whole(x, tt)
        stride = max(1, tile - overlap)
        th, tw = min(tile, h), min(tile, w)
        boxes = [(i, j) for i in _starts(h, tile, stride) for j in _starts(w, tile, stride)]
        out = self._eps_whole(torch.cat([x[..., i:i + th, j:j + tw] for i, j in boxes]), tt)
        weight = _window(th, overlap, x.device)[:, None] * _window(tw, overlap, x.device)[None, :]
        acc = x.new_zeros(n, c, h, w)
        norm = x.new_zeros(1, 1, h, w)
        for k, (i, j) in enumerate(boxes):
            acc[..., i:i + th, j:j + tw] += out[k * n:(k + 1) * n] * weight
            norm[..., i:i + th, j:j + tw] += weight
        return acc / norm

    def _step(self, x, t: int, t_prev: int, eta: float, noise, tile: int, overlap: int):
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[t_prev] if t_prev >= 0 else torch.ones_like(a_t)
        return reverse_step(x, self.eps(x, t, tile, overlap), a_t, a_prev, eta, noise)

    def draw_start(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return _randn(x.shape, generator, x.device)

    def purify(self, x: torch.Tensor, t_star: float, sampler: str = "ddpm", steps: int | None = None,
               generator: torch.Generator | None = None, start_noise: torch.Tensor | None = None,
               tile: int | None = None, overlap: int = 8, checkpointed: bool = False) -> torch.Tensor:
        """Diffuse x (in [0, 1]) to ``t_star`` and denoise it back with ``sampler``.

        ``steps`` defaults to every timestep for ``ddpm`` and 10 for ``ddim``. ``start_noise``
        (the forward diffusion's draw) may be given so two samplers share it. With
        ``checkpointed`` each reverse step is recomputed on the backward pass instead of
        stored, so the memory of a full gradient does not grow with the number of steps.
        """
        if sampler not in ("ddpm", "ddim"):
            raise ValueError(f"unknown sampler '{sampler}' (allowed: ddpm, ddim)")
        eta = 1.0 if sampler == "ddpm" else 0.0
        if eta > 0 and generator is None:
            raise ValueError("the ddpm sampler draws noise: pass a generator")
        t0 = self.start(t_star)
        ts = timesteps(t0, steps if steps is not None else (t0 + 1 if sampler == "ddpm" else 10))
        if start_noise is None:
            start_noise = self.draw_start(x, generator)
        a = self.alphas_cumprod[t0]
        z = a.sqrt() * (2 * x - 1) + (1 - a).sqrt() * start_noise
        tile = tile or self.size
        for t, t_prev in zip(ts, ts[1:] + [-1]):
            noise = _randn(x.shape, generator, x.device) if eta > 0 and t_prev >= 0 else None
            if checkpointed and torch.is_grad_enabled() and z.requires_grad:
                z = checkpoint(self._step, z, t, t_prev, eta, noise, tile, overlap, use_reentrant=False)
            else:
                z = self._step(z, t, t_prev, eta, noise, tile, overlap)
        return ((z + 1) / 2).clamp(0, 1)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal and vertical flips per image."""
    flips = torch.rand(x.shape[0], 2, generator=generator) < 0.5
    x = torch.where(flips[:, 0].view(-1, 1, 1, 1), x.flip(-1), x)
    return torch.where(flips[:, 1].view(-1, 1, 1, 1), x.flip(-2), x)


@torch.no_grad()
def evaluate_purifier(purifier: Purifier, clean: torch.Tensor, seed: int = 0,
                      t_star: float = 0.1, ddim_steps: int = 10) -> dict[str, float]:
    """Purified PSNR against the clean input (DDPM, every step; DDIM, few steps) and timings."""
    from arena.metrics import psnr

    report: dict[str, float] = {"t_star": t_star, "images": int(clean.shape[0])}
    for label, sampler, steps in (("ddpm", "ddpm", None), (f"ddim{ddim_steps}", "ddim", ddim_steps)):
        g = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        y = purifier.purify(clean, t_star, sampler, steps, generator=g)
        report[f"{label}_s"] = time.perf_counter() - t0
        report[f"{label}_psnr"] = float(psnr(y, clean).mean())
    a = purifier.alphas_cumprod[purifier.start(t_star)]
    noisy = (a.sqrt() * (2 * clean - 1) + (1 - a).sqrt() * torch.randn(
        clean.shape, generator=torch.Generator().manual_seed(seed)).to(clean.device) + 1) / 2
    report["noisy_psnr"] = float(psnr(noisy.clamp(0, 1), clean).mean())
    return report


def _training_images(size: int, seed: int, scenes: str) -> UDCData:
    """The UDC inputs of the scene pool's splits, drawn with the run's seed."""
    from arena.data import load_data
    from arena.data.augment import SCENES, concat

    if scenes not in SCENES:
        raise ValueError(f"scenes must be one of {list(SCENES)}, got {scenes!r}")
    parts = [load_data("embedded", split, size=size, seed=seed) for split in SCENES[scenes]]
    parts = [p for p in parts if len(p)]
    return parts[0] if len(parts) == 1 else concat(parts)


def train_purifier(steps: int, out: str | Path, seed: int = 0, size: int = 32, batch: int = 32,
                   lr: float = 2e-4, max_t_star: float = 0.5, unet: dict[str, Any] | None = None,
                   data: UDCData | None = None, threads: int | None = None,
                   progress: bool = True, eval_images: int = 8, device: str | None = None,
                   amp: bool = True, scenes: str = "train",
                   time_limit: float | None = None) -> Path:
    """Train the purifier on the embedded benchmark's UDC inputs; write safetensors + manifest.

    Epsilon-prediction DDPM loss with timesteps drawn uniformly below ``max_t_star`` (purification
    never starts higher, so training there would be wasted), Adam with a cosine learning rate,
    an exponential moving average of the weights (the EMA weights are saved), random flips.
    ``scenes`` picks the photographs the inputs come from (arena.data.augment.SCENES; never the
    test split's). The images stay on the CPU and each batch moves to the device; with ``amp``
    on a CUDA device the forward pass runs under bf16 autocast where the device has it; batches and noise are drawn on the CPU,
    so a seed means the same draws on any device. ``time_limit`` (seconds) stops a run that is
    slower than sized, and the manifest says so. Seeded: the same arguments give the same
    weights on the same machine. Returns the path.
    """
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from arena.defaults import default_device

    if threads:
        torch.set_num_threads(threads)
    dev = default_device(device)
    autocast = (dev.type == "cuda" and amp and torch.cuda.is_bf16_supported())
    if data is None:
        data = _training_images(size, seed, scenes)
    images = data.lq.float()
    if images.shape[-1] != size or images.shape[-2] != size:
        raise ValueError(f"training images are {tuple(images.shape[-2:])}, expected {size}x{size}")
    config = dict(DEFAULT_UNET, **(unet or {}), sample_size=size)
    schedule = dict(DEFAULT_SCHEDULE)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_unet(config)
    model.to(dev)
    ac = alphas_cumprod(schedule)
    t_max = max(1, round(max_t_star * len(ac)))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / 50) * 0.5 * (1 + math.cos(math.pi * i / max(1, steps))))
    ema = EMAModel(model.parameters(), decay=0.999, use_ema_warmup=True, power=0.75)
    model.train()
    t_start = time.perf_counter()
    running = None
    bar = tqdm(range(steps), desc="train purifier", disable=not progress)
    done = 0
    for _ in bar:
        idx = torch.randint(0, images.shape[0], (batch,), generator=g)
        x0 = 2 * _augment(images[idx], g) - 1
        t = torch.randint(0, t_max, (batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = ac[t].view(-1, 1, 1, 1)
        xt = (a.sqrt() * x0 + (1 - a).sqrt() * noise).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            pred = model(xt, t.to(dev)).sample
        loss = F.mse_loss(pred.float(), noise.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.step(model.parameters())
        value = loss.item()
        running = value if running is None else 0.98 * running + 0.02 * value
        bar.set_postfix(loss=f"{running:.4f}")
        done += 1
        if time_limit and time.perf_counter() - t_start > time_limit:
            break
    ema.copy_to(model.parameters())
    model.eval().requires_grad_(False)
    wall = time.perf_counter() - t_start
    manifest: dict[str, Any] = {
        "kind": "diffusion-purifier", "unet": config, "schedule": schedule, "size": size,
        "max_timestep": t_max - 1, "seed": seed, "steps": done, "batch": batch, "lr": lr,
        "stopped_early": None if done == steps else {"at": done, "time_limit_s": time_limit},
        "data": {"name": data.name, "split": scenes, "version": data.version, "hash": data.hash,
                 "images": int(images.shape[0])},
        "scenes": scenes, "device": str(dev), "amp": "bf16" if autocast else None,
        "final_loss_ema": running, "train_wall_s": wall, "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if eval_images:
        from arena.data import load_data

        test = load_data("embedded", split="test", images=eval_images, size=size, seed=seed)
        purifier = Purifier(model, ac.to(dev), size, t_max - 1, manifest)
        manifest["eval"] = evaluate_purifier(purifier, test.lq.float().to(dev), seed=seed)
    return save_weights(model.cpu(), out, manifest)


__all__ = ["DEFAULT_SCHEDULE", "DEFAULT_UNET", "Purifier", "alphas_cumprod", "build_unet",
           "evaluate_purifier", "reverse_step", "timesteps", "train_purifier"]
