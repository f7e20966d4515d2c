"""Ray on a two-node cluster simulated on this machine; a driver killed mid-tournament."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arena.plugins import load_registry
from arena.run.driver import run_tournament
from arena.store import queries, views
from arena.store.db import open_reader
from helpers import config, scores_only

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_gpu_work_lands_only_on_gpu_nodes_and_never_oversubscribes(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=2)  # logical GPUs: the scheduler's view
    ray.init(address=cluster.address)
    try:
        cluster.wait_for_nodes()
        t = config(num_gpus=1, num_cpus=0.5, workers=4)
        db = str(tmp_path / "c.db")
        report = run_tournament(t, db, executor="ray", progress=False, registry=load_registry())
        assert report.counts == {"done": 8}
        rows = queries.matches(open_reader(db))
        # the stored node: "host (first 8 hex of the node id, its CPUs and GPUs)"
        assert {r["node"].split(" (")[1] for r in rows} == {f"{gpu_node.node_id[:8]}, 2 CPU, 2 GPU)"}
        events = sorted([(r["started_at"], 1) for r in rows] + [(r["finished_at"], -1) for r in rows])
        running = peak = 0
        for _, step in events:
            running += step
            peak = max(peak, running)
        assert 1 <= peak <= 2
    finally:
        ray.shutdown()
        cluster.shutdown()


def _arena(*args, env=None):
    return [sys.executable, "-m", "arena.cli", *args]


def test_driver_killed_mid_tournament_resumes_to_the_same_results(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text('''
name = "kill"
threat_models = ["oblivious", "adaptive"]
[data]
images = 4
size = 16
[[restorers]]
name = "tiny"
[[restorers]]
name = "identity"
[[defenses]]
name = "none"
[[defenses]]
name = "jpeg"
[[attacks]]
name = "fgsm"
[[attacks]]
name = "pgd"
[[budgets]]
eps = "4/255"
steps = 40
[[budgets]]
eps = "8/255"
steps = 40
''')
    killed, clean = str(tmp_path / "killed.db"), str(tmp_path / "clean.db")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(_arena("run", str(cfg), "--db", killed, "--executor", "local", "--quiet"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    stored = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if Path(killed).exists():
            try:
                stored = queries.status_counts(open_reader(killed)).get("done", 0)
            except Exception:
                stored = 0
            if stored >= 3:
                break
    assert proc.poll() is None, "the tournament finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = queries.status_counts(open_reader(killed)).get("done", 0)
    assert 3 <= partial < 32
    subprocess.run(_arena("run", str(cfg), "--db", killed, "--executor", "local", "--quiet"), env=env,
                   check=True, capture_output=True)
    subprocess.run(_arena("run", str(cfg), "--db", clean, "--executor", "local", "--quiet"), env=env,
                   check=True, capture_output=True)
    a, b = open_reader(killed), open_reader(clean)
    assert queries.status_counts(a) == {"done": 32}
    assert scores_only(views.leaderboard(a)) == scores_only(views.leaderboard(b))
    with a.connect() as conn:
        from sqlalchemy import text
        assert conn.execute(text("select count(*) from scores")).scalar() == 32 * 4
        assert conn.execute(text("select count(distinct key) from matches")).scalar() == 32


def test_ctrl_c_stops_cleanly_and_keeps_what_is_stored(tmp_path):
    cfg = tmp_path / "t.toml"
    # 2000 PGD steps make each match last about 2 s (200 steps took 0.2 s on an idle machine,
    # close to the 0.5 s poll that waits for the first stored match before the Ctrl-C).
    cfg.write_text('''
name = "ctrlc"
workers = 2
[data]
images = 4
size = 16
[[restorers]]
name = "tiny"
[[attacks]]
name = "pgd"
[[budgets]]
eps = "1/255"
steps = 2000
[[budgets]]
eps = "2/255"
steps = 2000
[[budgets]]
eps = "3/255"
steps = 2000
[[budgets]]
eps = "4/255"
steps = 2000
[[budgets]]
eps = "5/255"
steps = 2000
[[budgets]]
eps = "6/255"
steps = 2000
''')
    db = str(tmp_path / "c.db")
    # A shell that starts the test suite in the background (`.ci/run &`) makes its children
    # ignore SIGINT, and that disposition survives exec; a user at a terminal has the default.
    proc = subprocess.Popen(_arena("run", str(cfg), "--db", db, "--quiet"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline, stored = time.time() + 180, 0
    while time.time() < deadline and proc.poll() is None and stored < 1:
        time.sleep(0.5)
        try:
            stored = queries.status_counts(open_reader(db)).get("done", 0)
        except Exception:
            stored = 0
    assert proc.poll() is None, proc.stdout.read()
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("arena run did not stop within 60 s of Ctrl-C")
    assert proc.returncode != 0 and "Aborted" in out
    counts = queries.status_counts(open_reader(db))
    assert set(counts) == {"done"} and 1 <= counts["done"] < 6
    rerun = subprocess.run(_arena("run", str(cfg), "--db", db, "--quiet", "--executor", "local"),
                           capture_output=True, text=True, check=True)
    assert f"already stored: {counts['done']}" in rerun.stdout
    assert queries.status_counts(open_reader(db)) == {"done": 6}
