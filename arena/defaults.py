"""The arena's defaults from the machine and the environment: the device and the cache folder.

Each is decided here and nowhere else, so the zoo, the workers, hardening, training and the
embedded benchmark cannot disagree. Importing this module loads nothing heavy (torch is
imported only when a device is asked for).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, or cuda when there is one, else the CPU."""
    import torch

    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def cache_dir(*parts: str) -> Path:
    """``$ARENA_CACHE`` joined with ``parts``; unset or empty, ``~/.cache/udc-arena``."""
    base = os.environ.get("ARENA_CACHE") or Path.home() / ".cache" / "udc-arena"
    return Path(base).joinpath(*parts)
