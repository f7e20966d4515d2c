"""scripts/train_zoo_gpu.sh, the prepared GPU run, on the CPU at 16 px and two steps per run:
every family and the purifier come back as loadable safetensors with their manifests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from arena.weights import read_manifest

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ["unet", "discnet", "nafnet", "uformer", "udcunet"]
TINY = {"DEVICE": "cpu", "SIZE": "16", "CROP": "16", "BATCH": "2", "STEPS": "2", "THREADS": "1",
        "PURIFIER_SIZE": "16", "PURIFIER_STEPS": "2", "PURIFIER_BATCH": "2"}


def run_script(out: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "train_zoo_gpu.sh"), str(out), *args],
        env={**os.environ, "PYTHON": sys.executable, **TINY, **env}, capture_output=True,
        text=True, timeout=900)


@pytest.mark.slow
def test_the_gpu_script_writes_every_family_and_the_purifier(tmp_path):
    from arena.plugins import load_registry
    from arena_plugins.defenses.purifier import Purifier

    out = tmp_path / "zoo"
    done = run_script(out)
    assert done.returncode == 0, done.stdout + done.stderr
    registry = load_registry()
    for name in FAMILIES:
        path = out / f"{name}.safetensors"
        m = read_manifest(path)
        assert m["restorer"] == name and m["steps"] == 2 and m["test"]["size"] == 16
        assert m["config"]["crop"] == 16 and m["config"]["synth_share"] == 1.0
        assert m["val"]["photos"] == ["brick", "grace_hopper"] and len(m["val"]["curve"]) == 1
        model = registry.create("restorer", name).load(weights=path)  # checks the sha256 too
        lq = torch.rand(1, 3, 16, 16)
        with torch.no_grad():
            y = model(lq, torch.zeros(1, 5)) if registry.create("restorer", name).needs_psf \
                else model(lq)
        assert y.shape == lq.shape and torch.isfinite(y).all()
    purifier = Purifier.load(out / "purifier-16.safetensors")
    assert purifier.size == 16 and purifier.manifest["steps"] == 2
    assert purifier.manifest["scenes"] == "train+extra"
    assert {"ddpm_psnr", "noisy_psnr"} <= set(purifier.manifest["eval"])


def test_the_gpu_script_refuses_the_shipped_folders(tmp_path):
    for folder in ("plugins/restorers/weights", "plugins/defenses/weights"):
        done = run_script(ROOT / folder)
        assert done.returncode == 2 and "refusing to write over the shipped" in done.stderr
    assert not (ROOT / "plugins/restorers/weights/logs").exists()
