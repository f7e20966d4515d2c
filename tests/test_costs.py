"""What a match costs, measured honestly: peak memory per match on the CPU too, and attack and
defense time per megapixel as medians over matches (arena/memory.py, store/views.py)."""

from __future__ import annotations

import statistics
import sys

import pytest
import torch
from sqlalchemy import select

from arena.api import Attack
from arena.memory import PeakMemory
from arena.run.driver import run_tournament
from arena.store import models as m
from arena.store import views
from arena.store.db import open_reader
from helpers import config, registry_with

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")


@linux
def test_peak_memory_window_sees_what_was_allocated_inside_it_and_resets():
    big = 256 * 2**20  # bytes
    kept = torch.ones(big // 4)  # held before the window opens: not the window's
    with PeakMemory(torch.device("cpu")) as during:
        x = torch.ones(big // 4)  # touched pages: resident
        del x
    with PeakMemory(torch.device("cpu")) as after:  # the high-water mark was reset
        pass
    del kept
    assert 0.9 * big / 2**20 < during.mb < 1.5 * big / 2**20
    assert after.mb < 0.1 * big / 2**20


class Hungry(Attack):
    """FGSM that also holds a large buffer for a moment: its matches' peak memory shows it."""

    name = "hungry"

    def perturb(self, target, lq, hq, budget, generator):
        scratch = torch.ones(400 * 2**20 // 4)  # 400 MiB, resident while it lives
        x = self.ascend(lq, target.loss_grad(lq, hq)[1], budget.eps, budget)
        del scratch
        return self.project(x, lq, budget)


@linux
def test_every_match_stores_its_own_peak_memory_and_attack_cost(tmp_path):
    t = config(restorers=["unet"], defenses=["none", "jpeg"], attacks=["fgsm", "hungry"],
               threat_models=["oblivious", "adaptive"], data={"name": "embedded", "split": "test", "images": 2, "size": 16})
    db = str(tmp_path / "a.db")
    run = run_tournament(t, db, executor="local", progress=False, registry=registry_with(Hungry))
    assert run.counts["done"] == 8
    with open_reader(db).connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(m.matches))]
    peaks = {(r["defense"], r["threat"], r["attack"]): r["peak_mem_mb"] for r in rows}
    assert all(p is not None and p >= 0 for p in peaks.values())
    # each match's window starts afresh: a hungry match that attacked peaks 400 MiB above the
    # fgsm one of its system, though all ran on one worker (the mark is reset per match), and
    # a reused batch costs no attack memory
    for system in (("none", "oblivious"), ("jpeg", "adaptive")):  # the two that computed
        assert peaks[(*system, "hungry")] - peaks[(*system, "fgsm")] > 300
    assert peaks[("jpeg", "oblivious", "hungry")] < 100
    megapixels = 2 * 16 * 16 / 1e6
    by_key = {r["key"]: r for r in rows}
    reused = [r for r in rows if (r["protocol"] or {}).get("computed_in")]
    assert len(reused) == 4  # oblivious jpeg and adaptive none reused oblivious none's batches
    for r in rows:
        source = (r["protocol"] or {}).get("computed_in")
        if source:  # another match's batch: what computing it cost there
            assert r["time_attack_s"] == 0 and r["attack_ms_per_mp"] == by_key[source]["attack_ms_per_mp"]
        else:
            assert r["attack_ms_per_mp"] == pytest.approx(1000 * r["time_attack_s"] / megapixels)
    board = views.leaderboard(open_reader(db))
    for row in board:
        mine = [r for r in rows if (r["defense"], r["threat"]) == (row["defense"], row["threat"])]
        costs = [r["attack_ms_per_mp"] for r in mine if r["attack_ms_per_mp"] is not None]
        assert row["attack_ms_per_mp"] == (statistics.median(costs) if costs else None)
        assert row["peak_mem_mb"] == max(r["peak_mem_mb"] for r in mine)
