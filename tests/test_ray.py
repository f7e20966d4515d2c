"""Real Ray: the default executor, a throwaway plugin package installed with pip, and faults.

The plugin package is written to a temporary folder and pip-installed into this environment
(then uninstalled), so Ray's worker processes discover it through entry points exactly as they
would a contributor's plugin.
"""

import subprocess
import sys
import textwrap

import pytest

from arena.plugins import load_registry
from arena.run.driver import run_tournament
from arena.store import queries, views
from arena.store.db import open_reader
from helpers import config, scores_only

pytestmark = [pytest.mark.ray, pytest.mark.slow]

PLUGIN = '''
"""Attacks for the arena's fault tests: one honest, four faulty."""
import os
import time

from arena.api import Attack
from arena.hookspecs import hookimpl


class Mirror(Attack):
    """A signed-gradient step with half the budget (an honest throwaway attack)."""
    name = "mirror"

    def perturb(self, target, lq, hq, budget, generator):
        _, grad = target.loss_grad(lq, hq)
        return self.project(self.ascend(lq, grad, budget.eps / 2, budget), lq, budget)


class Boom(Attack):
    """Raises."""
    name = "raiser"

    def perturb(self, target, lq, hq, budget, generator):
        raise ValueError("raised on purpose")


class Hang(Attack):
    """Never returns."""
    name = "hanger"

    def perturb(self, target, lq, hq, budget, generator):
        time.sleep(3600)


class Die(Attack):
    """Kills its worker process."""
    name = "killer"

    def perturb(self, target, lq, hq, budget, generator):
        os._exit(17)


@hookimpl
def register_attacks(register):
    for cls in (Mirror, Boom, Hang, Die):
        register(cls)
'''


@pytest.fixture(scope="module")
def plugin_package(tmp_path_factory):
    root = tmp_path_factory.mktemp("throwaway")
    (root / "arena_throwaway.py").write_text(PLUGIN)
    (root / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "arena-throwaway"
        version = "0.0.7"

        [tool.setuptools]
        py-modules = ["arena_throwaway"]

        [project.entry-points.arena]
        throwaway = "arena_throwaway"
    '''))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(root)]
    subprocess.run(pip, check=True)
    yield root
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "arena-throwaway"], check=True)


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def test_installed_plugin_is_listed_with_its_package(plugin_package):
    out = subprocess.run([sys.executable, "-m", "arena.cli", "plugins"], capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("mirror"))
    assert "arena-throwaway 0.0.7" in line and "white-box" in line
    blocked = subprocess.run([sys.executable, "-m", "arena.cli", "plugins"], capture_output=True, text=True,
                             env={**__import__("os").environ, "ARENA_BLOCK_PLUGINS": "throwaway"}).stdout
    assert "mirror" not in blocked and "pgd" in blocked
    only = subprocess.run([sys.executable, "-m", "arena.cli", "plugins"], capture_output=True, text=True,
                          env={**__import__("os").environ, "ARENA_PLUGINS": "throwaway,identity,none"}).stdout
    assert "mirror" in only and "pgd" not in only


def test_ray_tournament_matches_in_process_and_includes_the_plugin(plugin_package, ray_cluster, tmp_path):
    t = config(attacks=["fgsm", "mirror"], workers=2)
    registry = load_registry()
    ray_db, local_db = str(tmp_path / "ray.db"), str(tmp_path / "local.db")
    report = run_tournament(t, ray_db, executor="ray", progress=False, registry=registry)
    assert report.counts == {"done": 8}
    run_tournament(t, local_db, executor="local", progress=False, registry=registry)
    ray_rows = views.leaderboard(open_reader(ray_db))
    local_rows = views.leaderboard(open_reader(local_db))
    assert scores_only(ray_rows) == scores_only(local_rows)
    attacks = {r["attack"] for r in queries.matches(open_reader(ray_db))}
    assert attacks == {"fgsm", "mirror"}
    versions = next(r for r in queries.matches(open_reader(ray_db)) if r["attack"] == "mirror")["versions"]
    package, version, code = versions["attack:mirror"].split()  # results follow code: its fingerprint
    assert (package, version) == ("arena-throwaway", "0.0.7") and len(code) == 16


def test_faults_fail_their_own_match_and_the_rest_go_on(plugin_package, ray_cluster, tmp_path):
    t = config(restorers=["tiny"], defenses=["none"], attacks=["raiser", "hanger", "killer", "fgsm"],
               timeout_s=20, max_retries=1, workers=2)
    db = str(tmp_path / "faults.db")
    report = run_tournament(t, db, executor="ray", progress=False, registry=load_registry())
    rows = {r["attack"]: r for r in queries.matches(open_reader(db))}
    assert rows["fgsm"]["status"] == "done"
    assert rows["raiser"]["status"] == "failed" and "raised on purpose" in rows["raiser"]["error"]
    assert rows["hanger"]["status"] == "failed" and "timed out" in rows["hanger"]["reason"]
    assert rows["killer"]["status"] == "failed" and "worker died" in rows["killer"]["reason"]
    assert rows["killer"]["attempts"] == 2
    assert report.counts == {"done": 1, "failed": 3}


def test_gpu_request_without_gpus_fails_at_once(ray_cluster, tmp_path):
    from arena.run.executors import ExecutorError

    db = tmp_path / "gpu.db"
    with pytest.raises(ExecutorError, match="asks for 1 GPU"):
        run_tournament(config(num_gpus=1), str(db), executor="ray", progress=False, registry=load_registry())
    assert not db.exists()  # no database file until the cluster is accepted
