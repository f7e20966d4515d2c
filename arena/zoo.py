"""Scoring restorers on the test split: one restorer (``evaluate_restorer``) and the README's zoo
table of every restorer with shipped weights (``arena zoo``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from arena.api import ConfigError, Restorer, run_restorer
from arena.data import UDCData, load_data
from arena.defaults import default_device
from arena.metrics import psnr, ssim
from arena.plugins import Registry, load_registry
from arena.weights import read_manifest

EVAL_CHUNK = 32


def check_psf(restorer: Restorer, data: UDCData) -> None:
    if restorer.needs_psf and data.code is None:
        raise ConfigError(f"restorer '{restorer.name}' needs PSF kernel codes; dataset "
                          f"'{data.name}' has none")


@torch.no_grad()
def restore_all(model: torch.nn.Module, data: UDCData, needs_psf: bool,
                device: torch.device) -> torch.Tensor:
    outs = []
    for i in range(0, len(data), EVAL_CHUNK):
        lq = data.lq[i:i + EVAL_CHUNK].to(device)
        code = None if data.code is None else data.code[i:i + EVAL_CHUNK]
        outs.append(run_restorer(model, lq, code, needs_psf).clamp(0, 1).cpu())
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
    dev = default_device(device)
    model = restorer.load(dev, weights=weights)
    test = load_data(data, "test", root=data_root, size=size, seed=0)
    check_psf(restorer, test)
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
    available = [n for n, e in sorted(registry.entries["restorer"].items())
                 if not e.unavailable and e.cls.weights is not None]  # not `pretrained`: no defaults
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
