"""Compute each adversarial example once (arena/run/share.py): matches that share an attack
computation reuse one batch, with scores bit-identical to computing each separately."""

from __future__ import annotations

import pytest
import torch
from sqlalchemy import select

from arena.api import Attack
from arena.plan import plan
from arena.run.driver import run_tournament, summarise_plan
from arena.run.share import computations
from arena.store import models as m
from arena.store.db import open_reader
from helpers import config, registry_with


class Peeking(Attack):
    """A white-box attack that also queries the defended system (a fixture): its batch depends
    on the defense, so it must not be shared even under the oblivious threat model."""

    name = "peeking"

    def perturb(self, target, lq, hq, budget, generator):
        x = self.project(self.ascend(lq, target.loss_grad(lq, hq)[1], budget.eps, budget), lq, budget)
        loss = target.query(x, hq)  # the defended system's loss decides the sign
        sign = torch.where(loss > loss.median(), 1.0, -1.0).view(-1, 1, 1, 1)
        return self.project(lq + sign * (x - lq), lq, budget)


def tournament(**overrides):
    return config(**{"restorers": ["unet"], "defenses": ["none", "jpeg", {"name": "noise", "sigma": 0.02}],
                     "attacks": ["fgsm", "pgd", "peeking"], "threat_models": ["oblivious", "adaptive"],
                     "data": {"name": "embedded", "split": "test", "images": 2, "size": 16}, **overrides})


def stored(db):
    with open_reader(db).connect() as conn:
        rows = {r.key: dict(r._mapping) for r in conn.execute(select(m.matches))}
        scores = {}
        for s in conn.execute(select(m.scores).order_by(m.scores.c.id)):
            scores.setdefault(s.match_id, []).append((s.image, s.adv_psnr, s.adv_ssim, s.adv_psnr_mean,
                                                      s.adv_psnr_worst, s.clean_psnr, s.linf))
    return rows, {rows_key: scores[r["id"]] for rows_key, r in rows.items()}


def test_shared_computations_give_bit_identical_scores(tmp_path):
    registry = registry_with(Peeking)
    t = tournament()
    matches = plan(t, registry)
    # per white-box attack: one oblivious computation for the three defenses (adaptive against
    # none is the same one), one each adaptive through jpeg and noise: 3 x 3. The plan cannot
    # know that peeking looks at the defended system; the run finds out (below).
    assert len(matches) == 18 and computations(matches, registry) == 9
    assert "9 attack computations" in summarise_plan(matches, registry)
    shared_db, alone_db = str(tmp_path / "shared.db"), str(tmp_path / "alone.db")
    a = run_tournament(t, shared_db, executor="local", progress=False, registry=registry)
    b = run_tournament(t, alone_db, executor="local", progress=False, registry=registry, share=False)
    assert a.counts["done"] == b.counts["done"] == 18
    rows, shared = stored(shared_db)
    _, alone = stored(alone_db)
    assert shared == alone  # every score, bit for bit
    reused = {k: r for k, r in rows.items() if (r["protocol"] or {}).get("computed_in")}
    assert len(reused) == 6  # fgsm and pgd: oblivious jpeg and noise, adaptive none
    for r in reused.values():
        assert r["attack"] in ("fgsm", "pgd") and r["time_attack_s"] == 0.0
        source = next(x for x in rows.values() if x["key"] == r["protocol"]["computed_in"])
        assert (source["restorer"], source["attack"], source["eps"]) == (r["restorer"], r["attack"], r["eps"])
        assert source["gradient_calls"] == r["gradient_calls"] and source["trace"] == r["trace"]
    # the attack that looked at the defended system (planned as shareable, refused at run time)
    # computed its own batch every time; shared, its scores would have differed from `alone`
    assert not any(r["attack"] == "peeking" for r in reused.values())
    assert sum(r["attack"] == "peeking" for r in rows.values()) == 6


def test_defense_cost_is_timed_warm():
    """A defense whose first call pays a one-off warm-up (loading weights) is not charged it per
    megapixel: the cost is timed on a second purification."""
    import time

    from arena.api import Defense
    from arena.data import load_data
    from arena.match import clean_pass
    from arena.threat import System

    class SlowStart(Defense):
        name = "slow_start"
        calls = 0

        def purify(self, x, generator):
            type(self).calls += 1
            if type(self).calls == 1:
                time.sleep(0.5)  # the first call only: a warm-up
            return x

    registry = registry_with(SlowStart, role="defense")
    data = load_data("embedded", "test", images=2, size=16, seed=0)
    system = System(registry.create("restorer", "identity").load("cpu"), [SlowStart()])
    clean = clean_pass(system, data.lq, data.hq, 0)
    megapixels = 2 * 16 * 16 / 1e6
    assert clean.defense_ms_per_mp * megapixels < 100  # well under the 500 ms warm-up
    assert clean.time_s >= 0.5  # the clean pass itself did pay it


@pytest.mark.ray
@pytest.mark.slow
def test_under_ray_reusing_matches_wait_for_their_computation_in_one_pass(tmp_path):
    """On Ray, in one pass over the warm actors, a match that reuses a batch is held until the
    match computing it has finished; the scores equal those of a Ray run in which every match
    attacks for itself, bit for bit."""
    t = tournament(attacks=["fgsm", "pgd"], workers=2)
    ray_db, alone_db = str(tmp_path / "ray.db"), str(tmp_path / "alone.db")
    a = run_tournament(t, ray_db, executor="ray", progress=False)
    run_tournament(t, alone_db, executor="ray", progress=False, share=False)  # same threads: bit for bit
    assert a.counts["done"] == 12
    rows, shared = stored(ray_db)
    _, alone = stored(alone_db)
    assert shared == alone
    by_key = {r["key"]: r for r in rows.values()}
    reused = [r for r in rows.values() if (r["protocol"] or {}).get("computed_in")]
    assert len(reused) == 6
    for r in reused:
        assert r["started_at"] >= by_key[r["protocol"]["computed_in"]]["finished_at"]
