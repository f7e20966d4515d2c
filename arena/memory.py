"""A match's peak memory, on whatever device it ran.

On a CUDA device: torch's allocator high-water mark (``torch.cuda.max_memory_allocated``), reset
when the match starts. On the CPU: the worker process's resident-set high-water mark (Linux
``VmHWM``), reset when the match starts by writing 5 to ``/proc/self/clear_refs``; it counts
everything the process holds (the interpreter, torch, models and data kept warm), not only
what the match allocated. Elsewhere (no ``/proc``): ``None``, never a made-up number.
"""

from __future__ import annotations

from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _vm_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.mb`` (MiB, or None)."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.mb: float | None = None
        self._resident = False

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:  # Linux >= 4.0: "5" resets VmHWM to the current resident size
                _CLEAR_REFS.write_text("5")
                self._resident = _vm_kb("VmHWM") is not None
            except OSError:
                self._resident = False
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._resident:
            kb = _vm_kb("VmHWM")
            self.mb = kb / 1024 if kb is not None else None
