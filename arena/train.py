"""Train a registered restorer on UDC pairs and write its weights with a manifest.

The recipe is the one image-restoration papers share: L1 loss in the tone-mapped domain, AdamW
with a linear warm-up then cosine decay, random crops and dihedral augmentation, and the
checkpoint with the best PSNR on held-out training scenes: on the embedded benchmark two
photographs that neither training nor the test split uses (its "val" split), elsewhere crops
held out of the training split. The test split is scored once, at the end, for the manifest;
it chooses nothing. Checkpoints are safetensors plus JSON (never pickle), so an interrupted run
resumes where it stopped. The same command runs on a GPU: the training pairs live on the
device, fresh pairs are rendered there in batches, and the forward pass runs under autocast
(bf16, or fp16 with a gradient scaler, where the device has it; off on the CPU).
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
from arena.data.augment import (SCENES, Resynthesis, ScenePool, concat, make_batch,
                                psf_invariant_rot180, split_validation, training_data,
                                validation_data)
from arena.data.embedded import PHOTONS, READ_NOISE
from arena.defaults import cache_dir, default_device
from arena.plugins import Registry, load_registry
from arena.weights import load_state, read_manifest, save_weights
from arena.zoo import check_psf, score

VAL_IMAGES = 64  # held out of the training split for checkpoint selection (datasets without "val")
AMP = ("auto", "off", "bf16", "fp16")


def amp_dtype(amp: str, dev: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``dev`` (None: full precision). ``auto`` is bf16 on a
    CUDA device that has it, fp16 on one that does not, off elsewhere."""
    if amp not in AMP:
        raise ConfigError(f"amp must be one of {list(AMP)}, got {amp!r}")
    if amp == "auto":
        if dev.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and dev.type != "cuda":
        raise ConfigError("amp fp16 needs a CUDA device (the CPU's autocast is bf16)")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


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
        """``info`` (JSON) holds the run's config, validation curve and gradient scaler."""
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
                   work_dir: str | Path | None = None, scenes: str = "train+extra",
                   amp: str = "auto", time_limit: float | None = None,
                   registry: Registry | None = None) -> Path:
    """Train restorer ``name`` for ``steps`` steps and write ``out_dir/<name>.safetensors``.

    ``size`` is the side of the stored pairs and of the validation and test images; ``crop``
    the side of the training crops (larger than ``size`` only when the whole batch is fresh,
    ``synth_share=1``, drawn from the embedded photographs). ``scenes`` is the embedded
    benchmark's pool of training photographs (``arena.data.augment.SCENES``). The fresh share
    of each batch is cut from those photographs (``ScenePool``), or re-degraded from stored
    pairs (``Resynthesis``: other datasets, or with a ``procedural`` share).

    The manifest beside the weights records the config, seed, data version and hashes, steps,
    wall time, device, the validation curve, and mean clean PSNR/SSIM (and the input's) on the
    test split at ``size``. ``time_limit`` (seconds of training) is a safety net for a machine
    whose speed was not measured: the run then stops early, validates, and says so.
    """
    if steps < 1:
        raise ConfigError(f"steps must be positive, got {steps}")
    for key, share in (("synth_share", synth_share), ("procedural", procedural)):
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"{key} is a share of a batch, in [0, 1]; got {share}")
    if scenes not in SCENES:
        raise ConfigError(f"scenes must be one of {list(SCENES)}, got {scenes!r}")
    crop = crop or size
    if crop > size and (synth_share < 1.0 or data != "embedded" or procedural > 0):
        raise ConfigError(f"crop {crop} > size {size} needs every pair fresh from the embedded "
                          "photographs (synth_share=1, procedural=0)")
    if threads:
        torch.set_num_threads(threads)
    registry = registry or load_registry()
    restorer: Restorer = registry.create("restorer", name, params)
    dev = default_device(device)
    autocast = amp_dtype(amp, dev)
    warmup = warmup if warmup is not None else max(1, min(500, steps // 20))
    val_every = val_every or max(10, min(250, steps // 20))
    config = {
        "restorer": name, "params": restorer.params.model_dump(mode="json"), "seed": seed,
        "steps": steps, "batch": batch, "lr": lr, "size": size, "crop": crop,
        "data": data, "data_root": data_root, "data_seeds": data_seeds, "warmup": warmup,
        "weight_decay": weight_decay, "val_every": val_every, "loss": "l1",
        "synth_share": synth_share, "procedural": procedural,
        "scenes": scenes if data == "embedded" else None, "amp": amp,
    }

    parts = training_data(data, size, data_seeds, data_root, scenes)
    val = validation_data(data, size)
    if val is None:
        train, val = split_validation(parts, VAL_IMAGES, seed)
    else:
        train = concat(parts)
    check_psf(restorer, train)
    needs_psf = restorer.needs_psf
    # PSF-conditioned restorers only get augmentations that keep the kernel code true.
    dihedral, rot180 = (False, psf_invariant_rot180(train)) if needs_psf else (True, False)
    synth = None
    if synth_share > 0 and train.psf is not None:
        synth = (ScenePool(SCENES[scenes], size, train, dev)
                 if data == "embedded" and procedural == 0 else Resynthesis(train, procedural, dev))
        if crop > size:
            synth.check_crop(crop)
    for key in ("lq", "hq"):  # the stored pairs live on the device (their hash is already taken)
        setattr(train, key, getattr(train, key).to(dev))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes; GPU runs are not bitwise repeatable

    torch.manual_seed(seed)
    model = restorer.build().to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay,
                            fused=dev.type == "cuda")  # one kernel per step, not one per tensor
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warmup))
    gen = torch.Generator().manual_seed(seed)
    scaler = torch.amp.GradScaler(dev.type, enabled=autocast is torch.float16)

    work = Path(work_dir) if work_dir else default_work_dir(name, config)
    ckpt = Checkpoint(work)
    start, best, best_val, best_step, elapsed, curve = 0, {}, -math.inf, 0, 0.0, []
    if resume and ckpt.path.exists():
        start, best, info = ckpt.load(model, opt, gen)
        best_val, best_step, elapsed = info["best_val_psnr"], info["best_step"], info["wall_time_s"]
        curve = info.get("val_curve", [])
        if info.get("scaler"):
            scaler.load_state_dict(info["scaler"])
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warmup),
                                                  last_epoch=start - 1)

    t0 = time.perf_counter() - elapsed
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=f"train {name}",
               disable=not progress, dynamic_ncols=True)
    loss_ema, stopped = None, None
    for step in bar:
        lq, hq, code = make_batch(train, batch, crop, gen, dihedral, rot180, synth, synth_share)
        with torch.autocast(dev.type, dtype=autocast, enabled=autocast is not None):
            out = run_restorer(model, lq.to(dev), code, needs_psf)
        loss = F.l1_loss(out.float(), hq.to(dev))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        sched.step()
        value = loss.item()
        loss_ema = value if loss_ema is None else 0.98 * loss_ema + 0.02 * value

        done = step + 1
        if time_limit and time.perf_counter() - t0 > time_limit and done < steps:
            stopped = done
        if done % val_every == 0 or done == steps or stopped:
            v = score(model, val, needs_psf, dev)["psnr"]
            curve.append([done, round(v, 4)])
            if v > best_val:
                best_val, best_step = v, done
                best = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
            bar.set_postfix(loss=f"{loss_ema:.4f}", val=f"{v:.2f}",
                            best=f"{best_val:.2f}@{best_step}")
            ckpt.save(done, model, opt, best, gen, {
                "config": config, "best_val_psnr": best_val, "best_step": best_step,
                "wall_time_s": time.perf_counter() - t0, "val_curve": curve,
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            })
        if stopped:
            break
    bar.close()
    wall = time.perf_counter() - t0

    model.load_state_dict(best)
    test = load_data(data, "test", root=data_root, size=size, seed=0)
    result = score(model, test, needs_psf, dev)
    manifest = {
        "restorer": name, "config": config, "seed": seed, "steps": stopped or steps,
        "stopped_early": None if stopped is None else {"at": stopped, "time_limit_s": time_limit},
        "wall_time_s": round(wall, 1), "device": _device_name(dev), "torch": torch.__version__,
        "params": sum(p.numel() for p in model.parameters()),
        "data_version": test.version, "data_hash": test.hash,
        "train_data_hashes": [p.hash for p in parts],
        "val": {"split": "val" if data == "embedded" else "held-out training crops",
                "photos": sorted({i.split("-c")[0] for i in val.ids}) if data == "embedded"
                else None, "images": len(val), "best_psnr": best_val, "best_step": best_step,
                "curve": curve},
        "scenes": None if data != "embedded" else {
            "pool": scenes, "photos": sorted({i.split("-c")[0] for i in train.ids})},
        "amp": None if autocast is None else str(autocast).removeprefix("torch."),
        "augment": "dihedral" if dihedral else ("rot180" if rot180 else "none"),
        "resynthesis": None if synth is None else {
            "source": type(synth).__name__, "share": synth_share, "exposure": Resynthesis.GAIN,
            "white_balance": Resynthesis.WHITE, "photons": PHOTONS, "read_noise": READ_NOISE,
            "psfs": len(synth.codes), "procedural": procedural},
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
