"""The arena's own enforcement that is not about one cheating plugin: timeouts on the
in-process executor, Ray workers that ignore the driver's working folder, the oracle's counts."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from arena.api import Attack, Budget, RuleViolation
from arena.run.driver import run_tournament
from arena.store import queries
from arena.store.db import open_reader
from arena.threat import System, make_target
from helpers import config, registry_with


class Sleeper(Attack):
    """Sleeps far past any timeout (a hung-plugin fixture)."""

    name = "sleeper"

    def perturb(self, target, lq, hq, budget, generator):
        time.sleep(3600)


class Stubborn(Attack):
    """Swallows the timeout twice (it is a BaseException, so `except BaseException`), then
    returns an unperturbed batch as if nothing happened."""

    name = "stubborn"

    def perturb(self, target, lq, hq, budget, generator):
        swallowed = 0
        while swallowed < 2:
            try:
                time.sleep(3600)
            except BaseException:  # noqa: BLE001 - the point of the fixture
                swallowed += 1
        return lq


def test_local_executor_enforces_timeout_and_goes_on(tmp_path):
    t = config(restorers=["identity"], defenses=["none"], attacks=["sleeper", "stubborn", "fgsm"], timeout_s=2)
    db = str(tmp_path / "t.db")
    t0 = time.monotonic()
    report = run_tournament(t, db, executor="local", progress=False, registry=registry_with(Sleeper, Stubborn))
    assert time.monotonic() - t0 < 60
    rows = {r["attack"]: r for r in queries.matches(open_reader(db))}
    assert rows["sleeper"]["status"] == "failed" and "timed out after 2 s" in rows["sleeper"]["reason"]
    assert rows["stubborn"]["status"] == "failed" and "timed out" in rows["stubborn"]["reason"]
    assert rows["fgsm"]["status"] == "done"
    assert report.counts["failed"] == 2


def _target(kind, n=2, steps=3, eot=1, queries=5):
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    hq = torch.rand(n, 3, 8, 8)
    return make_target(kind, System(net, []), "oblivious", "mse", torch.Generator().manual_seed(0),
                       eot=eot, clean_out=None, hq=hq, lq=hq.clone(), budget=Budget(steps=steps, queries=queries),
                       rounds=1), hq


def test_each_query_row_counts_against_its_own_image():
    target, hq = _target("score-based")
    x = hq.repeat(3, 1, 1, 1)
    with pytest.raises(RuleViolation, match="index"):
        target.query(x)  # 6 rows for 2 images, no index
    target, hq = _target("score-based")
    target.query(x[:4], index=torch.tensor([0, 0, 0, 1]))
    assert target.queries.tolist() == [3, 1] and target.queries_left() == 2
    with pytest.raises(RuleViolation, match="exceed the limit of 5"):
        target.query(x[:3], index=torch.tensor([0, 0, 0]))
    assert target.violation  # remembered even if the attack had caught it


def test_forward_evaluations_are_bounded():
    target, hq = _target("white-box", steps=3)
    limit = Budget(steps=3).evaluation_limit(2, 1, 1)
    assert limit == 2 * (3 + 2)
    for _ in range(limit // 2):
        target.loss_grad(hq)
    assert target.evaluations == limit
    with pytest.raises(RuleViolation, match="evaluations"):
        target.loss_grad(hq)


def test_score_based_target_has_no_gradient_path():
    target, hq = _target("score-based")
    for name in ("forward", "loss_grad", "system", "model"):
        with pytest.raises(RuleViolation, match="score-based attack may only query"):
            getattr(target, name)


DECOY = "raise ImportError('imported the decoy arena from the working folder')\n"


@pytest.mark.ray
@pytest.mark.slow
def test_ray_workers_never_import_from_the_working_folder(tmp_path):
    """`arena run` typed in a folder that holds a package named `arena` (a checkout, a stray
    module): Ray puts the driver's folder on its workers' path, the arena must not let it."""
    (tmp_path / "arena").mkdir()
    (tmp_path / "arena" / "__init__.py").write_text(DECOY)
    cfg = tmp_path / "t.toml"
    cfg.write_text('name = "cwd"\nrestorers = ["identity"]\nattacks = ["fgsm"]\n'
                   'data = { images = 2, size = 16 }\nworkers = 1\n')
    arena = Path(sys.executable).with_name("arena")
    done = subprocess.run([str(arena), "run", str(cfg), "--db", str(tmp_path / "r.db"), "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = queries.matches(open_reader(str(tmp_path / "r.db")))
    assert [r["status"] for r in rows] == ["done"], [r["reason"] for r in rows]
