"""Hardened restorer weights: built once per (restorer, defense, data, seed), cached by content."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from arena.data import load_data
from arena.match import generator
from arena.plan import DataSpec, Spec
from arena.plugins import load_registry
from arena.weights import save_weights, sha256_file


def cache_dir() -> Path:
    return Path(os.environ.get("ARENA_CACHE", Path.home() / ".cache" / "udc-arena")) / "hardened"


def build_hardened(key: str, restorer: Spec, link: Spec, data: DataSpec, seed: int,
                   device: str | None = None, registry=None) -> str:
    """Run the defense's ``harden`` and store the weights; reuse them if already built."""
    path = cache_dir() / f"{link.name}-{restorer.name}-{key}.safetensors"
    if path.exists() and path.with_suffix(".json").exists():
        return str(path)
    registry = registry or load_registry()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    r = registry.create("restorer", restorer.name, restorer.params)
    d = registry.create("defense", link.name, link.params)
    model = r.load(dev)
    train = load_data(data.name, "train", root=data.root, size=data.size, seed=data.seed)
    t0 = time.perf_counter()
    state = d.harden(r, model, train, generator(seed))
    manifest = {
        "restorer": restorer.model_dump(mode="json"), "defense": link.model_dump(mode="json"),
        "data_version": train.version, "data_hash": train.hash, "seed": seed,
        "base_weights": sha256_file(r.weights) if r.weights else None,
        "wall_time_s": time.perf_counter() - t0, "device": str(dev),
    }
    return str(save_weights(state, path, manifest))
