"""Checkpoints trained elsewhere: `arena weights import` and the `pretrained` restorer.

Nothing is trained: the reference is spandrel's NAFNet, in the layout of the authors' BasicSR
release, with random weights, saved the way BasicSR saves (``{"params": ...}``, EMA in
``params_ema``) behind DataParallel's ``module.`` prefix.
"""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from arena.cli import main
from arena.plan import parse_config, plan
from arena.plugins import load_registry
from arena.weights import WeightsError
from arena_plugins.restorers.pretrained import import_spandrel

PARAMS = {"width": 8, "levels": 2, "middle_blocks": 1}


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def basicsr_nafnet(seed: int = 0) -> torch.nn.Module:
    """A small NAFNet in BasicSR's key layout, its zero-initialised branch scales drawn too."""
    import_spandrel()  # before any spandrel module: it stands in for torchvision
    from spandrel.architectures.NAFNet import NAFNet

    torch.manual_seed(seed)
    net = NAFNet(img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])
    for name, p in net.named_parameters():
        if name.endswith(("beta", "gamma")):
            p.data.normal_()
    return net.eval()


def save_basicsr(net, path, **extra):
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"params": state, "iter": 400000, **extra}, path)
    return path


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture
def images():
    return torch.rand(2, 3, 32, 36, generator=torch.Generator().manual_seed(1))


def test_cli_import_into_nafnet_gives_the_original_outputs(tmp_path, registry, images):
    net = basicsr_nafnet()
    ckpt = save_basicsr(net, tmp_path / "NAFNet-small.pth")
    out = tmp_path / "entered.safetensors"
    res = cli("weights", "import", ckpt, "--restorer", "nafnet", "--out", out,
              *(f"--param={k}={v}" for k, v in PARAMS.items()))
    assert res.exit_code == 0, res.output
    assert f'weights = "{out}"' in res.output
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["architecture"] == "NAFNetModule" and manifest["restorer_params"] == PARAMS
    assert manifest["params"] == sum(p.numel() for p in net.parameters())
    from arena.weights import sha256_file
    assert manifest["source"]["sha256"] == sha256_file(ckpt)
    # entered through a tournament config, as its worker builds it
    t = parse_config({"restorers": [{"name": "nafnet", "weights": str(out), **PARAMS}],
                      "attacks": ["fgsm"]})
    spec = plan(t, registry)[0].restorer
    model = registry.create("restorer", spec.name, spec.params).load()
    with torch.no_grad():
        # the same maths, LayerNorm written differently (rsqrt): float rounding only
        torch.testing.assert_close(model(images), net(images), rtol=0, atol=1e-5)
        shipped = registry.create("restorer", "nafnet", PARAMS).build().eval()
        assert (shipped(images) - net(images)).abs().max() > 1e-2  # the check can tell weights apart


def test_a_config_without_weights_plans_the_same_keys(registry):
    spec = plan(parse_config({"restorers": ["nafnet"], "attacks": ["fgsm"]}), registry)[0].restorer
    assert "weights" not in spec.params  # keys planned before `weights` existed stay valid


def test_pretrained_detects_the_architecture_and_is_identical(tmp_path, registry, images):
    net = basicsr_nafnet()
    ckpt = save_basicsr(net, tmp_path / "naf.pth")
    direct = registry.create("restorer", "pretrained", {"weights": str(ckpt)}).load()
    res = cli("weights", "import", ckpt, "--restorer", "pretrained", "--out", tmp_path / "p.safetensors")
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "p.json").read_text())
    assert manifest["architecture"] == "NAFNet"
    entered = registry.create("restorer", "pretrained", {"weights": str(tmp_path / "p.safetensors")}).load()
    with torch.no_grad():
        assert torch.equal(direct(images), net(images))
        assert torch.equal(entered(images), net(images))
        odd = images[..., :29, :31]  # padded to NAFNet's multiple and cropped back
        assert entered(odd).shape == odd.shape


def test_params_ema_is_preferred_and_nested_dicts_are_found(tmp_path, registry, images):
    ema, raw = basicsr_nafnet(0), basicsr_nafnet(1)
    nested = {"state_dict": {"params": {f"module.{k}": v for k, v in raw.state_dict().items()},
                             "params_ema": {f"module.module.{k}": v for k, v in ema.state_dict().items()}}}
    torch.save(nested, tmp_path / "both.ckpt")
    model = registry.create("restorer", "pretrained", {"weights": str(tmp_path / "both.ckpt")}).load()
    with torch.no_grad():
        assert torch.equal(model(images), ema(images))


class Unsafe:
    def __init__(self):
        self.weight = torch.zeros(3)


def test_a_pickle_needing_full_unpickling_is_refused_in_one_line(tmp_path):
    torch.save({"params": Unsafe()}, tmp_path / "unsafe.pth")
    res = CliRunner().invoke(main, ["weights", "import", str(tmp_path / "unsafe.pth"), "--restorer", "nafnet"])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    assert "refused" in lines[0] and "Unsafe" in lines[0] and "run arbitrary code" in lines[0]
    assert not list(tmp_path.glob("*.safetensors"))


def test_mismatched_tensors_are_one_line_with_counts(tmp_path, registry):
    ckpt = save_basicsr(basicsr_nafnet(), tmp_path / "naf.pth")
    res = CliRunner().invoke(main, ["weights", "import", str(ckpt), "--restorer", "nafnet"])  # 3 levels, width 16
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    assert "do not match the architecture" in lines[0]
    assert " missing [" in lines[0] and "of another shape ('" in lines[0]


def test_unrecognised_checkpoints_and_types_are_one_line(tmp_path, registry):
    torch.save({"params": {"foo.weight": torch.zeros(2)}}, tmp_path / "foo.pt")
    with pytest.raises(WeightsError, match="recognises no architecture"):
        registry.create("restorer", "pretrained", {"weights": str(tmp_path / "foo.pt")}).load()
    (tmp_path / "x.onnx").write_bytes(b"0")
    res = CliRunner().invoke(main, ["weights", "import", str(tmp_path / "x.onnx"), "--restorer", "nafnet"])
    assert res.exit_code == 1 and "allowed: .pth, .pt, .ckpt, .safetensors" in res.output


def readme_section(title: str) -> list[tuple[str, str]]:
    """(language, text) of each fenced block under README.md's heading ``title``."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    body = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```(\w+)\n(.*?)^```", body, flags=re.M | re.S)


def test_readme_bring_your_own_restorer_runs(tmp_path, images):
    blocks = readme_section("Bring your own restorer")
    commands = [ln for lang, text in blocks if lang == "bash" for ln in text.splitlines() if ln.strip()]
    (tmp_path / "byo.toml").write_text(next(text for lang, text in blocks if lang == "toml"))
    net = basicsr_nafnet()
    save_basicsr(net, tmp_path / "NAFNet-small.pth")
    assert len(commands) == 3 and all(c.startswith("arena ") for c in commands)
    bin_dir = Path(sys.executable).parent
    for command in commands:
        args = shlex.split(command)
        done = subprocess.run([str(bin_dir / "arena"), *args[1:]], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    from arena.store import queries, views
    from arena.store.db import open_reader

    rows = queries.matches(open_reader(str(tmp_path / "byo.db")))
    assert {r["restorer"] for r in rows} == {"pretrained", "nafnet"}
    assert {r["status"] for r in rows} == {"done"}, [r["reason"] for r in rows]
    clean = {r["restorer"]: r["clean_psnr"] for r in views.leaderboard(open_reader(str(tmp_path / "byo.db")))}
    assert abs(clean["pretrained"] - clean["nafnet"]) < 1e-3  # one network, entered two ways
