"""SimBA: try +/- a step along random orthonormal directions, keep what raises the loss."""

import math
from typing import Literal

import torch

from arena.api import Attack, AttackParams, Field
from arena.hookspecs import hookimpl


def dct_matrix(n: int, device=None) -> torch.Tensor:
    """Orthonormal DCT-II matrix: row k is the k-th cosine basis vector of length n."""
    i = torch.arange(n, dtype=torch.float32, device=device)
    m = torch.cos(math.pi * (2 * i[None, :] + 1) * i[:, None] / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m


class SimBA(Attack):
    """SimBA, simple black-box attack (Guo et al., ICML 2019), in the pixel or DCT basis.

    Each direction costs one or two queries of the whole batch; the attack stops before the query
    budget would be exceeded. Under the DCT basis the low-frequency block (``freq`` of each axis)
    is tried first, as in SimBA-DCT.
    """

    name = "simba"
    kind = "score-based"

    class Params(AttackParams):
        basis: Literal["pixel", "dct"] = Field("pixel", description="pixel or DCT directions")
        step: float = Field(4 / 256, gt=0, le=1, description="L2 length of each basis step")
        iterations: int = Field(1000, ge=1, le=10_000_000, description="directions tried at most")
        freq: float = Field(0.25, gt=0, le=1, description="dct: low-frequency fraction tried first")

    def perturb(self, target, lq, hq, budget, generator):
        n, c, h, w = lq.shape
        order = self.order(lq.shape, generator).to(lq.device)
        rows = torch.arange(n, device=lq.device)
        dct = (dct_matrix(h, lq.device), dct_matrix(w, lq.device))
        x, loss = lq, target.query(lq, hq)
        for t in range(min(self.params.iterations, order.shape[1])):
            if target.queries_left() < 1:
                break
            q = self.direction(order[:, t], lq.shape, rows, dct) * self.params.step
            keep = torch.zeros(n, dtype=torch.bool, device=lq.device)
            for sign in (-1.0, 1.0):
                if keep.all() or target.queries_left() < 1:
                    break
                cand = self.project(x + sign * q, lq, budget)
                cand_loss = target.query(cand, hq)
                better = ~keep & (cand_loss > loss)
                x = torch.where(better.view(-1, 1, 1, 1), cand, x)
                loss, keep = torch.where(better, cand_loss, loss), keep | better
        return x

    def order(self, shape, generator) -> torch.Tensor:
        """Per image, a random order of the basis directions (low frequencies first for dct)."""
        n, c, h, w = shape
        key = torch.rand(n, c * h * w, generator=generator)
        if self.params.basis == "dct":
            u, v = torch.arange(h).view(h, 1), torch.arange(w).view(1, w)
            high = ((u >= math.ceil(self.params.freq * h)) | (v >= math.ceil(self.params.freq * w)))
            key = key + high.flatten().repeat(c).float()  # every low one sorts before any high one
        return key.argsort(dim=1)

    def direction(self, index, shape, rows, dct) -> torch.Tensor:
        """The unit-L2 basis images of one flat index per image, (N, C, H, W)."""
        n, c, h, w = shape
        q = torch.zeros(n, c, h * w, device=index.device)
        ch, pos = index // (h * w), index % (h * w)
        if self.params.basis == "pixel":
            q[rows, ch, pos] = 1.0
            return q.view(shape)
        dh, dw = dct
        q[rows, ch] = (dh[pos // w].unsqueeze(2) * dw[pos % w].unsqueeze(1)).flatten(1)
        return q.view(shape)


@hookimpl
def register_attacks(register):
    register(SimBA)
