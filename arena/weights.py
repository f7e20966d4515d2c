"""Weights as safetensors with a JSON manifest beside them. Never pickle.

``name.safetensors`` holds the tensors; ``name.json`` holds the manifest (config, seed, data
version, steps, scores...) and the file's sha256, which loading checks.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from arena.errors import ArenaError


class WeightsError(ArenaError, ValueError):
    """Weights that cannot be trusted or do not fit the architecture."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_weights(state: dict[str, torch.Tensor] | torch.nn.Module, path: str | Path, manifest: dict[str, Any]) -> Path:
    """Write tensors and manifest atomically; returns the safetensors path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    os.chmod(tmp, 0o644)  # safetensors writes 0600; shipped and cached weights are for everyone
    digest = sha256_file(tmp)
    os.replace(tmp, path)
    meta = dict(manifest, sha256=digest, file=path.name)
    tmp_meta = manifest_path(path).with_name(manifest_path(path).name + ".tmp")
    tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    os.replace(tmp_meta, manifest_path(path))
    return path


def read_manifest(path: str | Path) -> dict[str, Any]:
    mpath = manifest_path(path)
    if not mpath.exists():
        raise WeightsError(f"{path}: no manifest {mpath.name} beside the weights")
    try:
        return json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{mpath}: manifest is not valid JSON ({exc})") from None


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file after checking it against its manifest's hash."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: weights must be a .safetensors file (pickle is never loaded)")
    if not path.exists():
        raise WeightsError(f"{path}: weights file not found")
    expected = read_manifest(path).get("sha256")
    actual = sha256_file(path)
    if expected != actual:
        raise WeightsError(
            f"{path}: sha256 {actual[:12]}… does not match its manifest ({str(expected)[:12]}…)"
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path}: unreadable safetensors file ({exc})") from None


def mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """What keeps ``state`` from loading strictly into a module whose state is ``own``: the
    first few missing, unexpected and misshapen tensors with their counts; "" if nothing."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    details = []
    if missing:
        details.append(f"{len(missing)} missing {missing[:3]}")
    if unexpected:
        details.append(f"{len(unexpected)} unexpected {unexpected[:3]}")
    if wrong:
        shapes = [f"'{k}' is {tuple(state[k].shape)}, model has {tuple(own[k].shape)}" for k in wrong[:2]]
        details.append(f"{len(wrong)} of another shape ({'; '.join(shapes)})")
    return "; ".join(details)


def load_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load checked weights into model; tensors must match the architecture exactly."""
    return load_strict(model, load_state(path), str(path))


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> torch.nn.Module:
    """Load ``state`` into ``model``; any missing, unexpected or misshapen tensor is one line."""
    problem = mismatch(model.state_dict(), state)
    if problem:
        raise WeightsError(f"{where}: tensors do not match the architecture: {problem}")
    model.load_state_dict(state)
    return model
