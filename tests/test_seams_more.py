"""More of the seams: each small piece of shared knowledge has one home that every user calls
(device, cache folder, SQLite file, ε label, PSF-conditioned forward, SSIM window, fine-tuning
bounds), and the commands and paths that had no test: `arena verify` and the flags it stores,
`arena train-purifier`, a custom BPDA ``approx``, sample folders beside a database server, and
the CLI of a plain install (no pytest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from sqlalchemy import select
from torchmetrics.functional.image import structural_similarity_index_measure

from arena import display
from arena.api import ConfigError, Defense, run_restorer
from arena.cli import main
from arena.defaults import cache_dir, default_device
from arena.metrics import ssim, ssim_window
from arena.plugins import load_registry
from arena.run.driver import run_tournament
from arena.store import models as m
from arena.store import queries, views
from arena.store.db import open_reader, sqlite_path
from arena.threat import System, Target
from helpers import config, require_tool
from pg import postgres_server


# -- one home each ---------------------------------------------------------------------------


def test_an_empty_arena_cache_means_unset_for_every_user(tmp_path, monkeypatch):
    from arena.data import default_cache_dir
    from arena.run import harden
    from arena.train import default_work_dir, run_key

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = tmp_path / "home" / ".cache" / "udc-arena"
    for value, base in (("", home), (str(tmp_path / "set"), tmp_path / "set")):
        monkeypatch.setenv("ARENA_CACHE", value)
        assert cache_dir() == base
        assert default_cache_dir() == base / "data"
        assert harden.cache_dir() == base / "hardened"
        assert default_work_dir("tiny", {"a": 1}) == base / "train" / f"tiny-{run_key({'a': 1})}"
    monkeypatch.delenv("ARENA_CACHE")
    assert harden.cache_dir() == home / "hardened"


def test_the_default_device_is_cuda_only_where_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == torch.device("cuda") and default_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device(None) == torch.device("cpu")
    assert default_device(torch.device("cuda", 1)) == torch.device("cuda", 1)


@pytest.mark.parametrize(("db", "path"), [
    ("results/arena.db", Path("results/arena.db")),
    ("~/arena.db", Path.home() / "arena.db"),
    ("sqlite:///rel/arena.db", Path("rel/arena.db")),
    ("sqlite:////abs/arena.db", Path("/abs/arena.db")),
    ("sqlite+pysqlite:////abs/arena.db", Path("/abs/arena.db")),
    ("sqlite:///:memory:", None),
    ("sqlite://", None),
    ("postgresql+psycopg://user@host/arena", None),
])
def test_the_sqlite_file_of_a_url_or_path(db, path):
    assert sqlite_path(db) == path
    assert display.results_dir(db) == (path.parent if path else Path("arena-results"))


@pytest.mark.parametrize(("eps", "label"), [
    (8 / 255, "8/255"), (1 / 255, "1/255"), (16 / 255, "16/255"), (0.1, "0.1"), (0.5, "0.5"), (2.0, "510/255"),
])
def test_one_eps_label(eps, label):
    assert display.eps_label(eps) == label


def test_the_cli_and_the_report_title_a_budget_with_the_one_label(tmp_path):
    from arena.report import _budget_title

    assert _budget_title({"threat": "oblivious", "norm": "linf", "eps": 0.1}) == "oblivious, linf ε = 0.1"
    db = str(tmp_path / "a.db")
    run_tournament(config(restorers=["identity"], defenses=["none"], attacks=["fgsm"], samples_per_match=0),
                   db, executor="local", progress=False)
    res = CliRunner().invoke(main, ["leaderboard", "--db", db])
    assert res.exit_code == 0 and "== oblivious | linf eps=8/255 ==" in res.output, res.output
    res = CliRunner().invoke(main, ["matches", "--db", db])
    assert res.exit_code == 0 and "oblivious linf eps=8/255" in res.output, res.output


class Recorder(torch.nn.Module):
    def forward(self, *args):
        self.args = args
        return args[0]


def test_run_restorer_passes_the_code_only_to_a_psf_restorer():
    net, lq, code = Recorder(), torch.rand(2, 3, 4, 4), torch.rand(2, 5, dtype=torch.float64)
    run_restorer(net, lq, code, needs_psf=False)
    assert len(net.args) == 1 and net.args[0] is lq
    run_restorer(net, lq, None, needs_psf=False)
    assert len(net.args) == 1
    run_restorer(net, lq, code, needs_psf=True)
    assert len(net.args) == 2 and torch.equal(net.args[1], code)


def test_a_psf_restorer_gets_its_codes_from_the_zoo_scorer():
    from arena.data import UDCData
    from arena.zoo import restore_all

    lq, code = torch.rand(3, 3, 8, 8), torch.rand(3, 5)
    data = UDCData(lq=lq, hq=lq, psf=None, code=code, ids=["a", "b", "c"], name="t", version="0")
    seen = []

    class PSFNet(torch.nn.Module):
        def forward(self, x, c):
            seen.append(c)
            return x

    assert torch.equal(restore_all(PSFNet(), data, True, torch.device("cpu")), lq)
    assert torch.equal(torch.cat(seen), code)


@pytest.mark.parametrize("side", [32, 11, 8, 5])
def test_the_ssim_window_is_the_one_ssim_uses(side):
    window = ssim_window((1, 3, side, side))
    assert window["kernel_size"] == min(11, (side // 2) * 2 - 1)
    assert window["sigma"] == pytest.approx(1.5 * window["kernel_size"] / 11)
    g = torch.Generator().manual_seed(side)
    x, y = torch.rand(2, 3, side, side, generator=g), torch.rand(2, 3, side, side, generator=g)
    want = structural_similarity_index_measure(x, y, data_range=1.0, reduction="none", **window)
    assert torch.equal(ssim(x, y), want)


@pytest.mark.parametrize("name", ["finetune", "advtrain"])
def test_the_fine_tuning_defenses_share_one_set_of_bounds(name):
    from arena_plugins.defenses.common import FineTuneParams

    cls = load_registry().get("defense", name).cls
    assert issubclass(cls.Params, FineTuneParams)
    shared = FineTuneParams.model_json_schema()["properties"]
    assert {k: v for k, v in cls.Params.model_json_schema()["properties"].items() if k in shared} == shared
    for bad in ({"steps": 0}, {"lr": 0}, {"batch": 5000}, {"ssim_weight": -1}):
        with pytest.raises(ConfigError, match=list(bad)[0]):
            cls.validate(bad)


def test_finetune_keeps_the_purifier_settings_check():
    from arena_plugins.defenses.finetune import FineTune

    with pytest.raises(ConfigError, match="overlap"):
        FineTune.validate({"tile": 8, "overlap": 8})


# -- arena verify ----------------------------------------------------------------------------


def not_converged(engine) -> list[dict]:
    return queries.fetch(engine, select(m.flags).where(m.flags.c.flag == "not-converged"))


def test_arena_verify_stores_and_replaces_its_not_converged_flags(tmp_path):
    db = str(tmp_path / "v.db")
    report = run_tournament(config(restorers=["tiny"], defenses=["none"], attacks=["fgsm", "pgd"],
                                   samples_per_match=0), db, executor="local", progress=False)
    assert report.counts == {"done": 2}
    reader = open_reader(db)
    pgd = next(r for r in queries.matches(reader) if r["attack"] == "pgd")

    runner = CliRunner()
    # a negative tolerance no rerun can meet: the sampled match is flagged
    res = runner.invoke(main, ["verify", "--db", db, "--sample", "4", "--tolerance=-1"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == "0 of 1 converged (tolerance -1.0 dB)"
    assert pgd["key"] in res.output and "fgsm" not in res.output  # single-step attacks are not re-run
    stored = not_converged(reader)
    assert [(f["tournament_id"], f["attack"], f["flag"]) for f in stored] == [
        (report.tournament_id, "pgd", "not-converged")]
    assert "twice the steps and a new seed move the score by" in stored[0]["reason"]
    (row,) = views.leaderboard(reader, report.tournament_id)
    assert "not-converged (pgd)" in row["flags"]

    # a rerun within tolerance replaces the earlier finding
    res = runner.invoke(main, ["verify", "--db", db, "--sample", "4", "--tolerance", "1000"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == "1 of 1 converged (tolerance 1000.0 dB)"
    assert not_converged(reader) == []
    (row,) = views.leaderboard(reader, report.tournament_id)
    assert "not-converged" not in row["flags"]


def test_verify_reruns_at_twice_the_steps_with_a_new_seed(tmp_path, monkeypatch):
    from arena import verify

    db = str(tmp_path / "v.db")
    run_tournament(config(restorers=["tiny"], defenses=["none"], attacks=["pgd"], samples_per_match=0),
                   db, executor="local", progress=False)
    reruns = []
    real = verify.rerun
    monkeypatch.setattr(verify, "rerun", lambda match, device=None: reruns.append(match) or real(match, device))
    reader = open_reader(db)
    (stored,) = queries.matches(reader)
    (result,) = verify.verify(reader, sample=1, seed=3, tolerance=0.5)
    (match,) = reruns
    assert match.budget.steps == 2 * stored["spec"]["budget"]["steps"]
    assert match.seed == stored["seed"] + 1003
    before = sum(s["adv_psnr"] for s in queries.scores_of(reader, stored["id"])) / 4
    assert result["adv_psnr"] == pytest.approx(before)
    assert result["moved_db"] == pytest.approx(result["adv_psnr"] - result["adv_psnr_2x"])
    assert result["converged"] == (abs(result["moved_db"]) <= 0.5)


# -- arena train-purifier --------------------------------------------------------------------


@pytest.mark.slow
def test_train_purifier_writes_weights_the_diffpure_defense_loads(tmp_path):
    from arena_plugins.defenses.diffpure import DiffPure
    from arena_plugins.defenses.purifier import Purifier, build_unet

    out = tmp_path / "p16.safetensors"
    res = CliRunner().invoke(main, ["train-purifier", "--steps", "2", "--size", "16", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert str(out) in res.output
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert (manifest["kind"], manifest["steps"], manifest["size"]) == ("diffusion-purifier", 2, 16)
    tensors = load_file(out)
    with torch.random.fork_rng(devices=[]):  # the weights it started from (seed 0)
        torch.manual_seed(0)
        start = build_unet(manifest["unet"]).state_dict()
    assert tensors.keys() == start.keys()
    assert any(not torch.equal(start[k], v) for k, v in tensors.items())  # two steps moved them
    state = Purifier.load(out).unet.state_dict()
    assert all(torch.equal(state[k], v) for k, v in tensors.items())
    link = DiffPure({"weights": str(out), "sampler": "ddim", "steps": 2})
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = link.purify(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and torch.isfinite(y).all() and not torch.equal(x, y)


# -- a custom approx is the backward path of a BPDA link -------------------------------------


class Quantise(Defense):
    """Rounds to four levels: zero gradient almost everywhere (a fixture)."""

    name = "quantise"
    gradient = "bpda"

    def purify(self, x, generator):
        return (x * 4).round() / 4


class QuantiseTriple(Quantise):
    """The same transform, with a custom stand-in whose gradient is 3."""

    name = "quantise3"

    def approx(self, x):
        return 3 * x


@pytest.mark.parametrize(("link", "threat", "slope"), [
    (QuantiseTriple, "adaptive", 3.0), (Quantise, "adaptive", 1.0), (QuantiseTriple, "oblivious", 1.0)])
def test_a_custom_approx_is_the_backward_path(link, threat, slope):
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    target = Target(System(torch.nn.Identity(), [link()]), threat, "mse", torch.Generator().manual_seed(0))
    out = target.forward(x)
    forward = (x * 4).round() / 4 if threat == "adaptive" else x
    assert torch.equal(out.detach(), forward.detach())  # the forward value is the real transform's
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, torch.full_like(x, slope))


# -- sample images when the database is not SQLite -------------------------------------------


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server() as url:
        yield require_tool(url, "PostgreSQL")


def _samples(db: str, tid: int) -> list[dict]:
    reader = open_reader(db)
    ids = [r["id"] for r in queries.matches(reader, tid)]
    return [s for i in ids for s in queries.samples_of(reader, i)]


@pytest.mark.postgres
def test_samples_of_a_database_server_go_to_arena_results_in_the_working_directory(pg_url, tmp_path, monkeypatch):
    t = config(restorers=["identity"], defenses=["none"], attacks=["fgsm"], samples_per_match=1,
               name="pg-samples")
    run_dir = tmp_path / "cwd"
    run_dir.mkdir()
    monkeypatch.chdir(run_dir)
    report = run_tournament(t, pg_url, executor="local", progress=False)
    samples = _samples(pg_url, report.tournament_id)
    assert {s["kind"] for s in samples} == set(display.SAMPLE_KINDS) - set(display.SCENE_KINDS)
    for s in samples:
        path = Path(s["path"])
        assert path.is_absolute() and path.is_file()
        assert path.parent.parent == run_dir / "arena-results" / "samples"
        assert display.sample_path(s["path"], pg_url) == path
    # the same tournament on SQLite keeps its samples beside the database file
    lite = tmp_path / "lite" / "arena.db"
    report = run_tournament(t, str(lite), executor="local", progress=False)
    for s in _samples(str(lite), report.tournament_id):
        assert Path(s["path"]).parent.parent == lite.parent / "samples"


def test_a_relative_sample_path_is_found_beside_the_sqlite_database(tmp_path, monkeypatch):
    picture = tmp_path / "results" / "samples" / "k" / "i0_lq.png"
    picture.parent.mkdir(parents=True)
    picture.write_bytes(b"png")
    monkeypatch.chdir(tmp_path)  # written from elsewhere: relative to another working directory
    stored = "old/place/samples/k/i0_lq.png"
    assert display.sample_path(stored, tmp_path / "results" / "arena.db") == picture
    assert display.sample_path(stored, f"sqlite:///{tmp_path / 'results' / 'arena.db'}") == picture
    assert display.sample_path(stored, "postgresql+psycopg://u@h/db") == Path(stored)


# -- a plain install: no pytest --------------------------------------------------------------

#: the CLI as a plain install (no [test] extra) runs it: `import pytest` fails. `plugins check`
#: without pytest is tests/test_plugin_containment.py's; this one imports every built-in plugin.
NO_PYTEST = ("import sys; sys.modules['pytest'] = sys.modules['_pytest'] = None; "
             "sys.argv = ['arena', *sys.argv[1:]]; from arena.cli import main; main()")


def test_arena_plugins_lists_every_builtin_where_pytest_cannot_be_imported(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ARENA_PLUGINS", "ARENA_BLOCK_PLUGINS")}
    done = subprocess.run([sys.executable, "-c", NO_PYTEST, "plugins", "--json"], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in done.stderr, done.stderr
    names = {r["name"] for r in json.loads(done.stdout)}
    assert {"tiny", "unet", "pgd", "apgd", "jpeg", "diffpure", "finetune", "advtrain"} <= names, names
