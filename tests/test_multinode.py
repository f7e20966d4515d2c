"""A real two-node Ray cluster, started as a user would (issue 16): `ray start --head` and a
second `ray start --address` as separate processes, each node with its own cache folder (no
shared filesystem for hardened weights), the driver an `arena run --address` process.

Covered: hardening on one node used by matches on the other, two drivers on one cluster, a
worker node killed mid-run (SIGKILL of its raylet and everything it started) and a node that
joins mid-run; each compares its leaderboard with the undisturbed run's. A stall prints Ray's
view of the cluster and the driver's stacks (and keeps them in $TMPDIR/arena-multinode-stall.txt).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
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
                PYTHONWARNINGS="ignore", PYTHONFAULTHANDLER="1")


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

    def add_worker(self, base: int, ip: str = "127.0.0.2") -> None:
        # its own loopback address: a driver on this machine attaches to the head's raylet (the
        # one at the machine's address), never to the worker node's, as off a real second host
        self._start("worker", [f"--address=127.0.0.1:{self.port}", f"--node-ip-address={ip}",
                               f"--min-worker-port={base}", f"--max-worker-port={base + 300}"])

    def kill_worker(self) -> None:
        """SIGKILL the worker node's raylet and every process it started, as a lost host would
        (nothing, where no worker node runs)."""
        out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
        raylets = [int(line.split()[0]) for line in out.splitlines()
                   if "raylet/raylet" in line and f"--node-name={self.tag}-worker" in line]
        if not raylets:
            return
        kids = subprocess.run(["pgrep", "-P", ",".join(map(str, raylets))], capture_output=True, text=True).stdout
        for pid in raylets + [int(p) for p in kids.split()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def run(self, name: str, systems: str, db: Path, steps: int = 20,
            eps: tuple[str, ...] = ("4/255", "8/255")) -> subprocess.Popen:
        cfg = self.root / f"{name}.toml"
        budgets = "".join(f'[[budgets]]\neps = "{e}"\nsteps = {steps}\n' for e in eps)
        cfg.write_text(CONFIG.format(name=name, systems=systems, budgets=budgets))
        return subprocess.Popen([ARENA, "run", str(cfg), "--address", f"127.0.0.1:{self.port}",
                                 "--db", str(db), "--quiet"], env=env_for(self.caches["driver"]),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def alive(self) -> int:
        """How many nodes Ray counts alive."""
        probe = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False)\n"
                 "print(sum(n['Alive'] for n in ray.nodes()))")
        res = subprocess.run([sys.executable, "-c", probe, f"127.0.0.1:{self.port}"], env=env_for(self.caches["driver"]),
                             capture_output=True, text=True, timeout=120)
        return int(res.stdout.split()[-1])

    def state(self) -> str:
        """Ray's view of the cluster (nodes, actors, tasks) and the Ray processes alive, for a stall's report."""
        probe = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False)\n"
                 "for n in ray.nodes(): print('node', n['NodeName'], n['Alive'], n['Resources'])\n"
                 "from ray._private.state import state\n"
                 "for a in state.actor_table(None).values(): print('actor', a['State'], a['Address'].get('NodeID', '')[:8],"
                 " a.get('ActorClassName'), a.get('DeathCause', '') and str(a['DeathCause'])[:200])\n"
                 "print('available', ray.available_resources())")
        res = subprocess.run([sys.executable, "-c", probe, f"127.0.0.1:{self.port}"], env=env_for(self.caches["driver"]),
                             capture_output=True, text=True, timeout=120)
        parts = [f"--- ray state ---\n{res.stdout[-6000:]}{res.stderr[-1500:]}"]
        ps = subprocess.run(["ps", "-ww", "-eo", "pid,ppid,stat,pcpu,args"], capture_output=True, text=True).stdout
        parts.append("--- processes ---\n" + "\n".join(line[:300] for line in ps.splitlines()
                                                        if self.temp in line or "ray::" in line or "arena run" in line))
        return "\n".join(parts)

    def close(self) -> None:
        subprocess.run(["pkill", "-9", "-f", self.temp], capture_output=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = TwoNodes(tmp_path_factory.mktemp("cluster"))
    yield c
    c.close()


def finished(proc: subprocess.Popen, timeout: float = 400, cluster: "TwoNodes | None" = None) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # a stall: what Ray thinks of its actors and nodes, then every driver thread's stack
        # (the driver runs with PYTHONFAULTHANDLER, which SIGABRT makes it print)
        seen = cluster.state() if cluster else ""
        proc.send_signal(signal.SIGABRT)
        out, _ = proc.communicate(timeout=60)
        report = f"{seen}\n--- driver ---\n{out}"
        Path(tempfile.gettempdir(), "arena-multinode-stall.txt").write_text(report)
        pytest.fail(f"the driver did not finish within {timeout:g} s\n{report[-6000:]}")
    assert proc.returncode == 0, out[-3000:]
    return out


def leaderboard(db: Path) -> list[dict]:
    from arena.store import views

    return scores_only(views.leaderboard(open_reader(str(db))), 6)


@pytest.fixture(scope="module")
def calm(cluster, tmp_path_factory) -> tuple[list[dict], float]:
    """The 16-match tournament undisturbed on both nodes: its leaderboard and wall time."""
    t0 = time.monotonic()
    db = tmp_path_factory.mktemp("calm") / "calm.db"
    finished(cluster.run("calm", SYSTEMS, db), cluster=cluster)
    return leaderboard(db), time.monotonic() - t0


def wait_for_done(proc: subprocess.Popen, db: Path, n: int) -> int:
    """Poll the database until ``n`` matches are done (or the driver exits); how many are."""
    done = 0
    while proc.poll() is None and done < n:
        time.sleep(0.3)
        try:
            done = queries.status_counts(open_reader(str(db))).get("done", 0)
        except Exception:  # noqa: BLE001 - not created yet
            done = 0
    assert proc.poll() is None, "the tournament finished before the cluster could be changed"
    return done


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


def test_two_drivers_on_one_cluster_and_one_database_both_finish_and_split_the_work(cluster, calm, tmp_path):
    db = tmp_path / "two.db"
    first, second = cluster.run("two", SYSTEMS, db), cluster.run("two", SYSTEMS, db)
    outs = [finished(first), finished(second)]
    rows = queries.matches(open_reader(str(db)))
    assert len(rows) == 16 and {r["status"] for r in rows} == {"done"}
    counts = [re.search(r"this run: ([^;]*);", out).group(1) for out in outs]
    done = [int(m.group(1)) if (m := re.search(r"(\d+) done", c)) else 0 for c in counts]
    assert sum(done) == 16, counts  # every match computed once, by one of the two
    print(f"\ntwo drivers on one cluster: {counts}")
    assert leaderboard(db) == calm[0]


def test_a_worker_node_lost_mid_run_is_survived_with_the_same_leaderboard(cluster, calm, tmp_path):
    hit = tmp_path / "hit.db"
    t0 = time.monotonic()
    proc = cluster.run("hit", SYSTEMS, hit)
    done = wait_for_done(proc, hit, 4)
    cluster.kill_worker()
    finished(proc, cluster=cluster)
    disturbed = time.monotonic() - t0
    print(f"\nundisturbed {calm[1]:.1f} s, worker node killed after {done} matches: {disturbed:.1f} s")
    rows = queries.matches(open_reader(str(hit)))
    assert {r["status"] for r in rows} == {"done"}, {(r["status"], r["reason"]) for r in rows}
    assert leaderboard(hit) == calm[0] != []


def test_a_node_that_joins_mid_run_gets_work(cluster, tmp_path):
    cluster.kill_worker()  # the run starts on the head alone (after the test above, it is alone already)
    deadline = time.monotonic() + 90
    while cluster.alive() > 1:
        assert time.monotonic() < deadline, "Ray still counts the killed worker node alive after 90 s"
        time.sleep(2)
    grown = tmp_path / "grown.db"
    proc = cluster.run("grown", SYSTEMS, grown, steps=80)  # long enough for a node to join and start a worker
    done = wait_for_done(proc, grown, 2)
    cluster.add_worker(random.randrange(40000, 60000, 1000), ip="127.0.0.3")
    finished(proc, cluster=cluster)
    rows = queries.matches(open_reader(str(grown)))
    assert {r["status"] for r in rows} == {"done"}, {(r["status"], r["reason"]) for r in rows}
    nodes = Counter(r["node"].split(" (")[1].split(",")[0] for r in rows)
    print(f"\na node joined after {done} matches: matches per node {dict(nodes)}")
    assert len(nodes) == 2  # the run started on the head alone, and the new node took some of the rest
