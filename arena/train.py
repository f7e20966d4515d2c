"""Train a registered restorer on UDC pairs and write its weights with a manifest.

The recipe is the one image-restoration papers share: L1 loss in the tone-mapped domain, AdamW
with a linear warm-up then cosine decay, random crops and dihedral augmentation, and the
checkpoint with the best PSNR on a held-out part of the training split. Checkpoints are
safetensors plus JSON (never pickle), so an interrupted run resumes where it stopped.

``python -m arena.train unet --steps 3000 --out plugins/restorers/weights``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from arena.api import ConfigError, Restorer
from arena.data import UDCData, form_udc, inverse_tonemap, load_data
from arena.data.embedded import PHOTONS, READ_NOISE
from arena.data.scenes import dead_leaves
from arena.metrics import psnr, ssim
from arena.plugins import Registry, load_registry
from arena.weights import load_state, read_manifest, save_weights

VAL_IMAGES = 64  # held out of the training split for checkpoint selection
EVAL_CHUNK = 32


# -- data ---------------------------------------------------------------------------------------


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


# -- evaluation ---------------------------------------------------------------------------------


@torch.no_grad()
def restore_all(model: torch.nn.Module, data: UDCData, needs_psf: bool,
                device: torch.device) -> torch.Tensor:
    outs = []
    for i in range(0, len(data), EVAL_CHUNK):
        lq = data.lq[i:i + EVAL_CHUNK].to(device)
        args = (data.code[i:i + EVAL_CHUNK].to(device),) if needs_psf else ()
        outs.append(model(lq, *args).clamp(0, 1).cpu())
    return torch.cat(outs)


def score(model: torch.nn.Module, data: UDCData, needs_psf: bool,
          device: torch.device) -> dict[str, float]:
    """Mean per-image PSNR/SSIM of the restored batch and of the degraded input."""
    was_training = model.training
    model.eval()
    out = restore_all(model, data, needs_psf, device)
    model.train(was_training)
    return {
        "psnr": float(psnr(out, data.hq).mean()), "ssim": float(ssim(out, data.hq).mean()),
        "input_psnr": float(psnr(data.lq, data.hq).mean()),
        "input_ssim": float(ssim(data.lq, data.hq).mean()),
        "images": len(data),
    }


def evaluate_restorer(name: str, weights: str | Path | None = None, size: int = 64, *,
                      params: dict[str, Any] | None = None, data: str = "embedded",
                      data_root: str | None = None, device: str | None = None,
                      registry: Registry | None = None) -> dict[str, float]:
    """Clean PSNR/SSIM (and the input's) of a restorer on the test split, seed 0."""
    registry = registry or load_registry()
    restorer: Restorer = registry.create("restorer", name, params)
    dev = _device(device)
    model = restorer.load(dev, weights=weights)
    test = load_data(data, "test", root=data_root, size=size, seed=0)
    _check_psf(restorer, test)
    return score(model, test, restorer.needs_psf, dev)


def zoo_table(names: list[str] | None = None, device: str | None = None,
              registry: Registry | None = None) -> str:
    """The README's zoo table: every restorer with shipped weights, scored now on the test split.

    Clean PSNR/SSIM are measured by this call (not copied from the manifests); the training
    columns come from each manifest, and a measured PSNR more than 0.05 dB away from the
    manifest's is marked with "!".
    """
    registry = registry or load_registry()
    rows, input_psnr, input_ssim = [], None, None
    available = [n for n, e in sorted(registry.entries["restorer"].items()) if not e.unavailable]
    for name in names or available:
        restorer = registry.create("restorer", name)
        if restorer.weights is None or not Path(restorer.weights).exists():
            continue
        m = read_manifest(restorer.weights)
        r = evaluate_restorer(name, registry=registry, device=device,
                              size=m["test"]["size"])
        input_psnr, input_ssim = r["input_psnr"], r["input_ssim"]
        mark = "" if abs(r["psnr"] - m["clean_psnr"]) <= 0.05 else " !"
        rows.append(f"| {name} | {m['params'] / 1e6:.2f}M | {r['psnr']:.2f}{mark} | "
                    f"{r['ssim']:.3f} | {r['psnr'] - r['input_psnr']:+.2f} dB | "
                    f"{m['steps']} steps × {m['config']['batch']}, {m['wall_time_s']:.0f} s, "
                    f"{m['device'].split(':')[0]} |")
    if not rows:
        return "no restorer with shipped weights"
    head = (f"UDC input: {input_psnr:.2f} dB / {input_ssim:.3f}\n\n"
            "| restorer | params | clean PSNR | clean SSIM | gain | training |\n"
            "|---|---|---|---|---|---|")
    return "\n".join([head, *rows])


# -- training -----------------------------------------------------------------------------------


def _device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _check_psf(restorer: Restorer, data: UDCData) -> None:
    if restorer.needs_psf and data.code is None:
        raise ConfigError(f"restorer '{restorer.name}' needs PSF kernel codes; dataset "
                          f"'{data.name}' has none")


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
    base = os.environ.get("ARENA_CACHE") or Path.home() / ".cache" / "udc-arena"
    return Path(base) / "train" / f"{name}-{run_key(config)}"


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
    dev = _device(device)
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
    _check_psf(restorer, train)
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
        args = (code.to(dev),) if needs_psf else ()
        loss = F.l1_loss(model(lq.to(dev), *args), hq.to(dev))
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


def _parse_params(items: list[str]) -> dict[str, Any]:
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


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(prog="python -m arena.train", description=__doc__.splitlines()[0])
    ap.add_argument("restorer")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--out", default=".", help="folder for <restorer>.safetensors and .json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=64, help="training sample and test image side")
    ap.add_argument("--crop", type=int, default=None, help="random crop side (default: size)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--data", default="embedded")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--data-seeds", type=int, default=4, help="embedded draws of crops/noise")
    ap.add_argument("--synth-share", type=float, default=0.5,
                    help="share of each batch resynthesised from the training scenes")
    ap.add_argument("--procedural", type=float, default=0.0,
                    help="share of the resynthesised pairs drawn from dead-leaves scenes")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    path = train_restorer(
        a.restorer, a.steps, a.out, seed=a.seed, size=a.size, batch=a.batch, lr=a.lr,
        device=a.device, resume=not a.no_resume, data_root=a.data_root, progress=not a.quiet,
        data=a.data, params=_parse_params(a.param), crop=a.crop, data_seeds=a.data_seeds,
        synth_share=a.synth_share, procedural=a.procedural, threads=a.threads,
    )
    m = read_manifest(path)
    print(f"{path}: clean PSNR {m['clean_psnr']:.2f} dB, SSIM {m['clean_ssim']:.4f} "
          f"(input {m['input_psnr']:.2f} dB) on {m['data_version']} test, {m['wall_time_s']:.0f} s")
    return path


if __name__ == "__main__":
    from arena.data import DataError
    from arena.plugins import PluginError
    from arena.weights import WeightsError

    try:
        main()
    except (ConfigError, DataError, PluginError, WeightsError) as exc:
        raise SystemExit(f"error: {exc}") from None
