"""Checkpoints trained elsewhere, entered as the arena's weights (``arena weights import``).

A ``.pth``/``.pt``/``.ckpt`` is read with ``torch.load(weights_only=True)`` and nothing looser:
a pickle that needs more than tensors, containers and numbers could run code while loading, so
it is refused. The state dict is found where training frameworks put it (BasicSR's
``params_ema``/``params``, Lightning's ``state_dict``, ``model``, nested), a ``module.`` prefix
of DataParallel is dropped, and the tensors are loaded strictly into the named restorer before
they are written as safetensors with a manifest.
"""

from __future__ import annotations

import pickle
import re
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from arena.weights import WeightsError, save_weights, sha256_file

SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
#: where a training framework keeps the state dict, most wanted first (EMA weights are what
#: BasicSR-style papers report)
STATE_KEYS = ("params_ema", "params", "state_dict", "model", "net", "generator")
PREFIXES = ("module.",)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint file, read without running any of its code."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise WeightsError(f"{path}: unknown checkpoint type '{suffix or path.name}' "
                           f"(allowed: {', '.join(SUFFIXES)})")
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found")
    if suffix == ".safetensors":
        try:
            return strip_prefix(load_file(str(path)))
        except (SafetensorError, OSError) as exc:
            raise WeightsError(f"{path}: unreadable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f"it holds an object of {found[1]}" if found else "it holds more than tensors"
        raise WeightsError(f"{path}: refused: {what}, and unpickling that could run arbitrary code; "
                           "only tensors, containers and numbers are read (torch.load "
                           "weights_only=True); save the state dict alone, or as .safetensors") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise WeightsError(f"{path}: not a readable torch checkpoint ({str(exc).splitlines()[0]})") from None
    return strip_prefix(find_state(obj, str(path)))


def is_state(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def find_state(obj: Any, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint: the object itself, or under STATE_KEYS, nested."""
    if is_state(obj):
        return dict(obj)
    if isinstance(obj, dict):
        for key in STATE_KEYS:
            if isinstance(obj.get(key), dict):
                try:
                    return find_state(obj[key], where)
                except WeightsError:
                    continue
        keys = sorted(str(k) for k in obj)[:8]
        raise WeightsError(f"{where}: no state dict found (top-level keys {keys}; looked for a dict "
                           f"of tensors, itself or under {', '.join(STATE_KEYS)})")
    raise WeightsError(f"{where}: no state dict found: the file holds a {type(obj).__name__}, "
                       "not a dict of tensors")


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a prefix every key carries (DataParallel's ``module.``), as often as it repeats."""
    for prefix in PREFIXES:
        while state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def import_weights(checkpoint: str | Path, restorer_name: str, out: str | Path | None = None,
                   params: dict[str, Any] | None = None, registry=None) -> Path:
    """Enter ``checkpoint`` as weights of restorer ``restorer_name``: load it strictly, write
    safetensors plus a manifest (source hash, architecture, parameter count, restorer params)."""
    from arena.plugins import load_registry

    registry = registry or load_registry()
    params = dict(params or {})
    field = registry.get("restorer", restorer_name).cls.Params.model_fields.get("weights")
    if field is not None and field.is_required():  # a restorer built from the checkpoint itself
        params.setdefault("weights", str(checkpoint))
    restorer = registry.create("restorer", restorer_name, params)
    checkpoint = Path(checkpoint)
    state = read_checkpoint(checkpoint)
    t0 = time.perf_counter()
    model, tensors, architecture = restorer.enter_state(state, str(checkpoint))
    out = Path(out) if out is not None else checkpoint.with_name(f"{checkpoint.stem}-{restorer_name}.safetensors")
    if out.suffix != ".safetensors":
        raise WeightsError(f"{out}: --out must end in .safetensors")
    manifest = {
        "restorer": restorer_name, "architecture": architecture,
        "params": sum(p.numel() for p in model.parameters()),
        "restorer_params": restorer.params.model_dump(mode="json", exclude={"weights"}),
        "source": {"file": checkpoint.name, "sha256": sha256_file(checkpoint),
                   "tensors": len(state)},
        "imported_s": round(time.perf_counter() - t0, 3),
    }
    return save_weights(tensors, out, manifest)
