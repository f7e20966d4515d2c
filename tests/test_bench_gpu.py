"""benchmarks/bench_gpu.py runs on the CPU at tiny sizes (the GPU run is the same script), also
where Ray is not installed, as on the accelerator host."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_gpu_runs_on_cpu_without_ray(tmp_path):
    # a `ray` that cannot be imported: the benchmark must not need it (the accelerator host has none)
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text("raise ImportError('no Ray on this host')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "benchmarks/bench_gpu.py", "--device", "cpu", "--size", "16", "--images", "2",
           "--steps", "2", "--restorers", "unet", "nafnet", "--eps", "4", "--seeds", "1", "--concurrency", "1", "2",
           "--repeats", "1"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    text = out.stdout
    assert "arena / bare loop:" in text and "arena / ART:" in text
    table = text.split("speed-up  scores")[1].splitlines()[1:]  # the rows under the tournament's header
    rows = [line.split() for line in table if line.strip()]
    assert [r[0] for r in rows] == ["1", "2"]
    for r in rows:  # span, wall, matches per hour, utilisation: numbers measured, not blanks
        assert 0 < float(r[1]) < float(r[2]) and float(r[3]) > 0 and float(r[4]) >= 0
    assert all("same as k=1" in " ".join(r) for r in rows)
