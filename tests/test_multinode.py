"""A real two-node Ray cluster, started as a user would (issue 16): `ray start --head` and a
second `ray start --address` as separate processes, each node with its own cache folder (no
shared filesystem for hardened weights), the driver an `arena run --address` process.

Covered: hardening on one node used by matches on the other, and two drivers on one cluster.
A worker node killed mid-run is not tested here: that test passed on this machine but stalled
twice under CI (the disturbed run never finished), cause not found; see issue 16.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from arena.store import queries
from arena.store.db import open_reader
from helpers import scores_only
from pg import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).parent / "ray")
ARENA = str(Path(sys.executable).parent / "arena")

CONFIG = '''
name = "{name}"
seed = 0
threat_models = ["oblivious", "adaptive"]
num_cpus = 1
samples_per_match = 0
[data]
images = 4
size = 32
{systems}
[[attacks]]
name = "pgd"
restarts = 1
{budgets}'''
#: eight systems of two restorers and two defenses: 16 matches of about a second each
SYSTEMS = '''
[[restorers]]
name = "unet"
[[restorers]]
name = "nafnet"
[[defenses]]
name = "none"
[[defenses]]
name = "jpeg"
quality = 75
'''
#: one hardened system (adversarial fine-tuning of the tiny restorer), built on one node
HARDENED = '''
[[restorers]]
name = "tiny"
[[defenses]]
name = "advtrain"
steps = 4
batch = 2
attack_steps = 1
'''


def env_for(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # token authentication would need the token file on every node; on loopback it is off here
    return dict(env, RAY_AUTH_MODE="disabled", ARENA_CACHE=str(cache), RAY_USAGE_STATS_ENABLED="0",
                PYTHONWARNINGS="ignore")


class TwoNodes:
    """Head and worker started by `ray start`, each with its own ARENA_CACHE."""

    def __init__(self, root: Path):
        self.root = root
        self.temp = tempfile.mkdtemp(prefix="rn", dir="/tmp")  # short: Ray's socket paths are limited
        self.port = free_port()
        base = random.randrange(40000, 60000, 1000)
        self.caches = {name: root / f"cache-{name}" for name in ("head", "worker", "driver")}
        self.tag = Path(self.temp).name
        self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                             f"--ray-client-server-port={free_port()}", f"--temp-dir={self.temp}",
                             f"--min-worker-port={base}", f"--max-worker-port={base + 300}"])
        self.add_worker(base + 400)

    def _start(self, name: str, args: list[str]) -> None:
        res = subprocess.run([RAY, "start", "--num-cpus=1", "--disable-usage-stats",
                              f"--node-name={self.tag}-{name}", *args],
                             env=env_for(self.caches[name]), capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]

    def add_worker(self, base: int) -> None:
        # its own loopback address: a driver on this machine attaches to the head's raylet (the
        # one at the machine's address), never to the worker node's, as off a real second host
        self._start("worker", [f"--address=127.0.0.1:{self.port}", "--node-ip-address=127.0.0.2",
                               f"--min-worker-port={base}", f"--max-worker-port={base + 300}"])

    def run(self, name: str, systems: str, db: Path, steps: int = 20,
            eps: tuple[str, ...] = ("4/255", "8/255")) -> subprocess.Popen:
        cfg = self.root / f"{name}.toml"
        budgets = "".join(f'[[budgets]]\neps = "{e}"\nsteps = {steps}\n' for e in eps)
        cfg.write_text(CONFIG.format(name=name, systems=systems, budgets=budgets))
        return subprocess.Popen([ARENA, "run", str(cfg), "--address", f"127.0.0.1:{self.port}",
                                 "--db", str(db), "--quiet"], env=env_for(self.caches["driver"]),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def close(self) -> None:
        subprocess.run(["pkill", "-9", "-f", self.temp], capture_output=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = TwoNodes(tmp_path_factory.mktemp("cluster"))
    yield c
    c.close()


def finished(proc: subprocess.Popen, timeout: float = 400) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def leaderboard(db: Path) -> list[dict]:
    from arena.store import views

    return scores_only(views.leaderboard(open_reader(str(db))), 6)


def test_hardened_weights_built_on_one_node_are_used_on_the_other(cluster, tmp_path):
    db = tmp_path / "h.db"
    finished(cluster.run("harden", HARDENED, db, steps=40, eps=("1/255", "2/255", "4/255", "8/255")))
    rows = queries.matches(open_reader(str(db)))
    assert {r["status"] for r in rows} == {"done"}, {(r["status"], r["reason"]) for r in rows}
    assert len({r["node"].split(" (")[1] for r in rows}) == 2  # matches ran on both nodes
    # one node built the weights; each node read them from its own cache folder, where the
    # other's copy arrived through the object store
    for node in ("head", "worker", "driver"):
        assert len(list((cluster.caches[node] / "hardened").glob("advtrain-tiny-*.safetensors"))) == 1, node
    # the same tournament in one process, from the driver's copy of the weights: the same leaderboard
    alone = tmp_path / "alone.db"
    res = subprocess.run([ARENA, "run", str(cluster.root / "harden.toml"), "--executor", "local", "--db", str(alone),
                          "--quiet"], env=env_for(cluster.caches["driver"]), capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert leaderboard(alone) == leaderboard(db) != []


def test_two_drivers_on_one_cluster_and_one_database_both_finish_and_split_the_work(cluster, tmp_path):
    db, alone = tmp_path / "two.db", tmp_path / "one.db"
    first, second = cluster.run("two", SYSTEMS, db), cluster.run("two", SYSTEMS, db)
    outs = [finished(first), finished(second)]
    rows = queries.matches(open_reader(str(db)))
    assert len(rows) == 16 and {r["status"] for r in rows} == {"done"}
    counts = [re.search(r"this run: ([^;]*);", out).group(1) for out in outs]
    done = [int(m.group(1)) if (m := re.search(r"(\d+) done", c)) else 0 for c in counts]
    assert sum(done) == 16, counts  # every match computed once, by one of the two
    print(f"\ntwo drivers on one cluster: {counts}")
    finished(cluster.run("two", SYSTEMS, alone))
    assert leaderboard(db) == leaderboard(alone)
