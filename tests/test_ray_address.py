"""Addresses mean what they say (issue 16): no --address is a private local Ray instance, and
an address where nothing listens fails in seconds, in one line that names it."""

import re
import socket
import time

import pytest
from click.testing import CliRunner

from arena.cli import main
from arena.plan import parse_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]

from helpers import TINY_TOML  # noqa: E402

CONFIG = 'name = "address"\n' + TINY_TOML


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens on it now
    return port


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_address_where_nothing_listens_fails_in_seconds_in_one_line(tmp_path, scheme):
    cfg = tmp_path / "t.toml"
    cfg.write_text(CONFIG)
    address = f"{scheme}127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    res = CliRunner().invoke(main, ["run", str(cfg), "--address", address, "--db", str(tmp_path / "x.db")],
                             catch_exceptions=False)
    took = time.monotonic() - t0
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1 and len(lines) == 1, res.output
    assert f"no Ray cluster at '{address}'" in lines[0]
    assert took < 20
    assert not (tmp_path / "x.db").exists()  # nothing is created before the cluster is accepted


def test_a_gpu_request_the_cluster_cannot_meet_leaves_no_database_file(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text(CONFIG.replace('name = "address"', 'name = "address"\nnum_gpus = 1\nnum_cpus = 1'))
    res = CliRunner().invoke(main, ["run", str(cfg), "--db", str(tmp_path / "x.db")], catch_exceptions=False)
    lines = [ln for ln in res.output.splitlines() if ln.strip() and not ln.startswith("Token authentication")]
    assert res.exit_code == 1 and len(lines) == 1 and "GPU(s) per match but the Ray cluster has 0" in lines[0], res.output
    assert not (tmp_path / "x.db").exists() and not list(tmp_path.glob("x.db*"))


def test_a_malformed_address_is_one_line():
    from arena.run.executors import ExecutorError, probe_address

    with pytest.raises(ExecutorError, match="is not HOST:PORT"):
        probe_address("127.0.0.1:port")


def test_no_address_starts_a_private_local_ray_and_ignores_the_machines_cluster(monkeypatch):
    """``RAY_ADDRESS`` is where ``ray.init()`` looks first, before the last ``ray start``'s
    cluster file: a dead one there shows that neither is joined."""
    import ray

    from arena.run.executors import RayExecutor

    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{closed_port()}")
    t0 = time.monotonic()
    ex = RayExecutor(parse_config({**_raw(), "num_cpus": 1}))
    try:
        assert time.monotonic() - t0 < 60
        assert ray.is_initialized() and ray.cluster_resources().get("CPU", 0) >= 1
        assert ex._owns_ray
        from arena.run.worker import ray_node  # what each match stores as its node

        node = ray.get(ray.remote(num_cpus=1)(ray_node).remote())
        me = ray.get_runtime_context().get_node_id()
        assert re.fullmatch(rf"{re.escape(socket.gethostname())} \({me[:8]}, \d+ CPU\)", node), node
    finally:
        ex.close()
    assert not ray.is_initialized()


def _raw():
    import tomllib

    return tomllib.loads(CONFIG)
