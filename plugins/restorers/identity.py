"""The identity restorer: the UDC input unchanged, the floor every restorer must beat."""

import torch

from arena.api import Restorer
from arena.hookspecs import hookimpl


class _Identity(torch.nn.Module):
    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        return lq


class Identity(Restorer):
    """Identity: returns the degraded input (baseline; no paper)."""

    name = "identity"

    def build(self) -> torch.nn.Module:
        return _Identity()


@hookimpl
def register_restorers(register):
    register(Identity)
