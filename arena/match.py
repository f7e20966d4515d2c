"""Evaluate one match: clean, attacked, defended; budget verification; metrics.

Runs inside a worker. Everything it needs arrives as plain data (the Match) plus the worker's
warm components; everything it returns is plain data for the driver to store.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from arena.api import Attack
from arena.data import UDCData
from arena.metrics import psnr, ssim
from arena.plan import Match
from arena.threat import System, Target, verify


@dataclass
class Clean:
    """Clean restoration of a system on the match's images, shared by all attacks on it."""

    out: torch.Tensor
    psnr: torch.Tensor
    ssim: torch.Tensor
    defense_ms_per_mp: float
    time_s: float


@dataclass
class Outcome:
    status: str  # done | failed | disqualified
    reason: str | None = None
    error: str | None = None
    scores: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)  # image, kind, uint8 HWC array
    timings: dict[str, float] = field(default_factory=dict)
    trace: list[float] = field(default_factory=list)
    start_grad: dict[str, float] | None = None
    gradient_calls: int = 0
    peak_mem_mb: float | None = None


def generator(seed: int) -> torch.Generator:
    """Draws happen on the CPU so a seed means the same thing on every device."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clean_pass(system: System, lq: torch.Tensor, hq: torch.Tensor, seed: int) -> Clean:
    device = lq.device
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        purified = system.purify(lq, generator(seed))
        _sync(device)
        t1 = time.perf_counter()
        out = system.restore(purified).clamp(0, 1)
    _sync(device)
    t2 = time.perf_counter()
    megapixels = lq.shape[0] * lq.shape[-1] * lq.shape[-2] / 1e6
    return Clean(out, psnr(out, hq), ssim(out, hq), 1000 * (t1 - t0) / megapixels, t2 - t0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def evaluate(match: Match, system: System, attack: Attack, data: UDCData, clean: Clean,
             samples: int = 0, surrogate=None) -> Outcome:
    """Attack the system on the data; verify the batch; score clean and adversarial outputs."""
    device = clean.out.device
    lq, hq = data.lq.to(device), data.hq.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reference = clean.out
    if match.threat == "oblivious" and attack.params.objective == "mse_clean":
        with torch.no_grad():
            reference = system.restore(lq).clamp(0, 1)
    target = Target(system, match.threat, attack.params.objective, generator(match.seed + 1),
                    eot=match.eot, clean_out=reference)
    target.surrogate = surrogate
    t0 = time.perf_counter()
    try:
        x_adv = attack.run(target, lq, hq, match.budget, generator(match.seed + 2))
    except Exception as exc:
        return Outcome("failed", reason=f"attack raised {type(exc).__name__}: {exc}",
                       error=traceback.format_exc())
    _sync(device)
    t_attack = time.perf_counter() - t0
    outcome = Outcome("done", trace=target.trace, start_grad=target.start_grad,
                      gradient_calls=target.gradient_calls)
    outcome.timings = {"clean": clean.time_s, "attack": t_attack}
    problem = verify(x_adv, lq, match.budget, target.queries)
    if problem:
        outcome.status, outcome.reason = "disqualified", problem
        return outcome
    t1 = time.perf_counter()
    adv_out = system(x_adv, generator(match.seed))  # same defense draw as the clean pass
    adv_psnr, adv_ssim = psnr(adv_out, hq), ssim(adv_out, hq)
    outcome.timings["eval"] = time.perf_counter() - t1
    delta = (x_adv - lq).flatten(1)
    queries = target.queries if target.queries is not None else torch.zeros(len(lq), dtype=torch.long)
    for i, image in enumerate(data.ids):
        outcome.scores.append({
            "image": image,
            "clean_psnr": float(clean.psnr[i]), "clean_ssim": float(clean.ssim[i]),
            "adv_psnr": float(adv_psnr[i]), "adv_ssim": float(adv_ssim[i]),
            "linf": float(delta[i].abs().max()), "l2": float(delta[i].norm()),
            "queries": int(queries[i]),
        })
    for i in range(min(samples, len(lq))):
        amplified = (0.5 + (x_adv[i] - lq[i]) / (2 * max(match.budget.eps, 1e-8))).clamp(0, 1)
        if match.budget.norm == "l2":
            d = x_adv[i] - lq[i]
            amplified = (0.5 + d / (2 * d.abs().max().clamp_min(1e-8))).clamp(0, 1)
        for kind, img in (("lq", lq[i]), ("adv", x_adv[i]), ("delta", amplified),
                          ("restored_clean", clean.out[i]), ("restored_adv", adv_out[i]), ("hq", hq[i])):
            outcome.samples.append({"image": data.ids[i], "kind": kind, "array": to_uint8(img)})
    if device.type == "cuda":
        outcome.peak_mem_mb = torch.cuda.max_memory_allocated(device) / 2**20
    if not all(np.isfinite([s["adv_psnr"] for s in outcome.scores])):
        outcome.status, outcome.reason = "disqualified", "non-finite scores"
    return outcome
