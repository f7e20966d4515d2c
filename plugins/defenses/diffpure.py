"""Diffusion purification of the input with the project's UDC purifier (purifier.py).

Gradient modes. ``Defense.gradient`` is a class attribute, so DiffPure declares ``exact`` and its
``purify`` builds the gradient path its ``grad_mode`` asks for when the input requires grad:

- ``full``: back-propagates through every step of the real sampler, each step checkpointed
  (recomputed on the backward pass), so memory stays that of one step whatever the step count;
- ``surrogate``: the forward value is the real sampler's, the backward pass goes through a
  short deterministic DDIM run from the same noisy start, ``y_sur + (y - y_sur).detach()``;
- ``bpda``: the forward value is the real sampler's, the backward pass is the identity,
  ``x + (y - x).detach()`` (Athalye et al., 2018).

All three give the same forward value for the same generator state: only the gradient differs.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import click
import torch
from pydantic import model_validator

from arena.api import Defense, Field, Params
from arena_plugins.defenses.purifier import Purifier
from arena.hookspecs import hookimpl

WEIGHTS = Path(__file__).parent / "weights" / "purifier-32.safetensors"


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str) -> Purifier:
    # Workers rebuild defenses per match; the purifier's weights are loaded once per process.
    return Purifier.load(path, device)


def load_purifier(weights: str | None, device: torch.device | str) -> Purifier:
    return _load(str(Path(weights) if weights else WEIGHTS), str(torch.device(device)))


class PurifierSettings(Params):
    """Which purifier, and how it tiles large images (shared by diffpure and finetune)."""

    tile: int | None = Field(
        None, ge=8, le=4096, description="tile size for larger images (default: trained size)")
    overlap: int = Field(8, ge=0, le=512, description="overlap of neighbouring tiles, in pixels")
    weights: str | None = Field(
        None, description="purifier safetensors from `arena train-purifier` (default: shipped)")

    @model_validator(mode="after")
    def _overlap_fits(self):
        if self.tile is not None and self.overlap >= self.tile:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than tile ({self.tile})")
        return self

    def run(self, x: torch.Tensor, t_star: float, sampler: str, steps: int | None, generator,
            start_noise=None, checkpointed: bool = False) -> torch.Tensor:
        purifier = load_purifier(self.weights, x.device)
        return purifier.purify(x, t_star, sampler, steps, generator=generator,
                               start_noise=start_noise, tile=self.tile, overlap=self.overlap,
                               checkpointed=checkpointed)


Sampler = Literal["ddpm", "ddim"]
SAMPLER_HELP = "ddpm: stochastic, every timestep by default; ddim: deterministic, strided"


class DiffPure(Defense):
    """Diffusion purification, DiffPure (Nie et al., ICML 2022), with a DDPM trained on UDC inputs."""

    name = "diffpure"
    gradient = "exact"  # the grad_mode parameter picks the actual rule; see the module docstring
    random = True

    class Params(PurifierSettings):
        t_star: float = Field(0.1, gt=0, le=0.5, description="noise level, fraction of the schedule")
        sampler: Sampler = Field("ddpm", description=SAMPLER_HELP)
        steps: int | None = Field(
            None, ge=1, le=1000,
            description="reverse steps (default: every timestep from t* for ddpm, 10 for ddim)")
        grad_mode: Literal["full", "surrogate", "bpda"] = Field(
            "full", description="gradient for adaptive attacks: full (checkpointed), "
            "surrogate (short DDIM on the backward pass) or bpda (identity backward)")
        surrogate_steps: int = Field(4, ge=1, le=100, description="DDIM steps of the surrogate")

    def gradient_rule(self) -> str:
        return "exact" if self.params.grad_mode == "full" else self.params.grad_mode

    def exact(self) -> "DiffPure":
        return type(self)(self.params.model_copy(update={"grad_mode": "full"}))

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        p = self.params
        start = load_purifier(p.weights, x.device).draw_start(x, generator)
        if not (torch.is_grad_enabled() and x.requires_grad) or p.grad_mode == "full":
            return p.run(x, p.t_star, p.sampler, p.steps, generator, start, checkpointed=True)
        with torch.no_grad():
            y = p.run(x, p.t_star, p.sampler, p.steps, generator, start)
        if p.grad_mode == "bpda":
            return x + (y - x).detach()
        y_sur = p.run(x, p.t_star, "ddim", p.surrogate_steps, None, start, checkpointed=True)
        return y_sur + (y - y_sur).detach()


@hookimpl
def register_defenses(register):
    register(DiffPure)


@hookimpl
def register_commands(cli):
    @cli.command("train-purifier")
    @click.option("--steps", default=850, show_default=True, help="the shipped purifier's count")
    @click.option("--out", default="purifier.safetensors", show_default=True)
    @click.option("--size", default=32, show_default=True)
    @click.option("--seed", default=0, show_default=True)
    def train_purifier(steps, out, size, seed):
        """Train the diffusion purifier on the embedded benchmark's UDC inputs."""
        from arena_plugins.defenses.purifier import train_purifier as train_fn

        click.echo(train_fn(steps, out, seed=seed, size=size))
