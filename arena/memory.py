"""A match's peak memory, on whatever device it ran: how far above the level at its start the
memory rose while it ran, so what other systems left loaded on the worker does not count.

On a CUDA device: torch's allocator (``max_memory_allocated`` after a reset, minus
``memory_allocated`` at the start). On the CPU: the worker process's resident set (Linux:
``VmHWM`` after writing 5 to ``/proc/self/clear_refs``, which resets it to the current
``VmRSS``, minus that ``VmRSS``). Where the reset is not available or does not take (no
``/proc``, a sandbox that ignores the write): ``None``, never a made-up number.
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
        self._start_kb: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        try:  # Linux >= 4.0: "5" resets VmHWM to the current resident size
            _CLEAR_REFS.write_text("5")
        except OSError:
            return self
        rss, hwm = _vm_kb("VmRSS"), _vm_kb("VmHWM")
        if rss is not None and hwm is not None and hwm - rss < 4096:  # the reset took (within 4 MiB)
            self._start_kb = rss
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
        elif self._start_kb is not None:
            kb = _vm_kb("VmHWM")
            self.mb = (kb - self._start_kb) / 1024 if kb is not None else None
