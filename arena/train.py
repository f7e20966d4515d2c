"""Train a registered restorer on UDC pairs and write its weights with a manifest.

The recipe is the one image-restoration papers share: L1 loss in the tone-mapped domain, AdamW
with a linear warm-up then cosine decay, random crops and dihedral augmentation, and the
checkpoint with the best PSNR on a held-out part of the training split. Checkpoints are
safetensors plus JSON (never pickle), so an interrupted run resumes where it stopped.
The training pairs come from :mod:`arena.data.augment`, the scores from :mod:`arena.zoo`.

``arena train unet --steps 3000 --out plugins/restorers/weights``
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from arena.api import ConfigError, Restorer, run_restorer
from arena.data import load_data
from arena.data.augment import (Resynthesis, make_batch, psf_invariant_rot180, split_validation,
                                training_data)
from arena.data.embedded import PHOTONS, READ_NOISE
from arena.defaults import cache_dir, default_device
from arena.plugins import Registry, load_registry
from arena.weights import load_state, read_manifest, save_weights
from arena.zoo import check_psf, score

VAL_IMAGES = 64  # held out of the training split for checkpoint selection


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up to 1, then cosine decay to 1% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able groups."""
    sd = opt.state_dict()
    tensors = {f"optim.{idx}.{k}": v for idx, st in sd["state"].items() for k, v in st.items()}
    return tensors, {"param_groups": sd["param_groups"]}


def _optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                            groups: dict) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


class Checkpoint:
    """The last state of a run (model, optimizer, best model, batch RNG) as safetensors + JSON."""

    def __init__(self, directory: Path):
        self.path = directory / "last.safetensors"

    def save(self, step: int, model, opt, best: dict[str, torch.Tensor], gen: torch.Generator,
             info: dict[str, Any]) -> None:
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update({f"best.{k}": v for k, v in best.items()})
        opt_tensors, groups = _optimizer_tensors(opt)
        tensors.update(opt_tensors)
        tensors["rng"] = gen.get_state()
        save_weights(tensors, self.path, dict(info, step=step, optimizer=groups))

    def load(self, model, opt, gen: torch.Generator) -> tuple[int, dict[str, torch.Tensor], dict]:
        tensors = load_state(self.path)
        info = read_manifest(self.path)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        _optimizer_from_tensors(opt, tensors, info["optimizer"])
        gen.set_state(tensors["rng"])
        return int(info["step"]), best, info


def run_key(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def default_work_dir(name: str, config: dict[str, Any]) -> Path:
    return cache_dir("train", f"{name}-{run_key(config)}")


def train_restorer(name: str, steps: int, out_dir: str | Path, seed: int = 0, size: int = 64,
                   batch: int = 8, lr: float = 1e-3, device: str | None = None,
                   resume: bool = True, data_root: str | None = None, progress: bool = True, *,
                   data: str = "embedded", params: dict[str, Any] | None = None,
                   crop: int | None = None, data_seeds: int = 4, warmup: int | None = None,
                   weight_decay: float = 1e-4, val_every: int | None = None,
                   synth_share: float = 0.5, procedural: float = 0.0, threads: int | None = None,
                   work_dir: str | Path | None = None,
                   registry: Registry | None = None) -> Path:
    """Train restorer ``name`` for ``steps`` steps and write ``out_dir/<name>.safetensors``.

    The manifest beside the weights records the config, seed, data version and hashes, steps,
    wall time, device, and mean clean PSNR/SSIM (and the input's) on the test split at ``size``.
    """
    if steps < 1:
        raise ConfigError(f"steps must be positive, got {steps}")
    for key, share in (("synth_share", synth_share), ("procedural", procedural)):
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"{key} is a share of a batch, in [0, 1]; got {share}")
    if threads:
        torch.set_num_threads(threads)
    registry = registry or load_registry()
    restorer: Restorer = registry.create("restorer", name, params)
    dev = default_device(device)
    crop = crop or size
    warmup = warmup if warmup is not None else max(1, min(500, steps // 20))
    val_every = val_every or max(10, min(250, steps // 20))
    config = {
        "restorer": name, "params": restorer.params.model_dump(mode="json"), "seed": seed,
        "steps": steps, "batch": batch, "lr": lr, "size": size, "crop": crop,
        "data": data, "data_root": data_root, "data_seeds": data_seeds, "warmup": warmup,
        "weight_decay": weight_decay, "val_every": val_every, "loss": "l1",
        "synth_share": synth_share, "procedural": procedural,
    }

    parts = training_data(data, size, data_seeds, data_root)
    train, val = split_validation(parts, VAL_IMAGES, seed)
    check_psf(restorer, train)
    needs_psf = restorer.needs_psf
    # PSF-conditioned restorers only get augmentations that keep the kernel code true.
    dihedral, rot180 = (False, psf_invariant_rot180(train)) if needs_psf else (True, False)
    synth = Resynthesis(train, procedural) if synth_share > 0 and train.psf is not None else None

    torch.manual_seed(seed)
    model = restorer.build().to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warmup))
    gen = torch.Generator().manual_seed(seed)

    work = Path(work_dir) if work_dir else default_work_dir(name, config)
    ckpt = Checkpoint(work)
    start, best, best_val, best_step, elapsed = 0, {}, -math.inf, 0, 0.0
    if resume and ckpt.path.exists():
        start, best, info = ckpt.load(model, opt, gen)
        best_val, best_step, elapsed = info["best_val_psnr"], info["best_step"], info["wall_time_s"]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warmup),
                                                  last_epoch=start - 1)

    t0 = time.perf_counter() - elapsed
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=f"train {name}",
               disable=not progress, dynamic_ncols=True)
    loss_ema = None
    for step in bar:
        lq, hq, code = make_batch(train, batch, crop, gen, dihedral, rot180, synth, synth_share)
        loss = F.l1_loss(run_restorer(model, lq.to(dev), code, needs_psf), hq.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        value = loss.item()
        loss_ema = value if loss_ema is None else 0.98 * loss_ema + 0.02 * value

        done = step + 1
        if done % val_every == 0 or done == steps:
            v = score(model, val, needs_psf, dev)["psnr"]
            if v > best_val:
                best_val, best_step = v, done
                best = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
            bar.set_postfix(loss=f"{loss_ema:.4f}", val=f"{v:.2f}",
                            best=f"{best_val:.2f}@{best_step}")
            ckpt.save(done, model, opt, best, gen, {
                "config": config, "best_val_psnr": best_val, "best_step": best_step,
                "wall_time_s": time.perf_counter() - t0,
            })
    bar.close()
    wall = time.perf_counter() - t0

    model.load_state_dict(best)
    test = load_data(data, "test", root=data_root, size=size, seed=0)
    result = score(model, test, needs_psf, dev)
    manifest = {
        "restorer": name, "config": config, "seed": seed, "steps": steps,
        "wall_time_s": round(wall, 1), "device": _device_name(dev), "torch": torch.__version__,
        "params": sum(p.numel() for p in model.parameters()),
        "data_version": test.version, "data_hash": test.hash,
        "train_data_hashes": [p.hash for p in parts],
        "val": {"images": len(val), "best_psnr": best_val, "best_step": best_step},
        "augment": "dihedral" if dihedral else ("rot180" if rot180 else "none"),
        "resynthesis": None if synth is None else {
            "share": synth_share, "exposure": Resynthesis.GAIN, "white_balance": Resynthesis.WHITE,
            "photons": PHOTONS, "read_noise": READ_NOISE, "psfs": len(synth.bank),
            "procedural": procedural},
        "test": {"split": "test", "size": size, "seed": 0, "dataset": data},
        "clean_psnr": result["psnr"], "clean_ssim": result["ssim"],
        "input_psnr": result["input_psnr"], "input_ssim": result["input_ssim"],
    }
    out = Path(out_dir) / f"{name}.safetensors"
    return save_weights(best, out, manifest)


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def parse_params(items: Iterable[str]) -> dict[str, Any]:
    """``--param KEY=VALUE`` items as restorer parameters: JSON values, else strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--param takes key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
