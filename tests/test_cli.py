"""The command line: one-line errors, dry runs, listing, reproduce."""

import json

import pytest
from click.testing import CliRunner

from arena.cli import main


def run(*args, **kw):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, **kw)


def write_config(tmp_path, body):
    p = tmp_path / "t.toml"
    p.write_text(body)
    return str(p)


from helpers import TINY_TOML  # noqa: E402

BASE = 'name = "cli"\n' + TINY_TOML


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    cfg = write_config(tmp_path, BASE + '[[budgets]]\neps = "4/255"\n[[budgets]]\neps = "8/255"\n')
    res = run("run", cfg, "--dry-run", "--db", str(tmp_path / "x.db"))
    assert res.exit_code == 0
    assert "2 matches: 2 to run, 0 skipped" in res.output
    assert not (tmp_path / "x.db").exists()


def test_bad_parameter_is_a_single_line(tmp_path):
    cfg = write_config(tmp_path, BASE.replace('name = "fgsm"', 'name = "pgd"\nrestarts = -1'))
    res = run("run", cfg, "--db", str(tmp_path / "x.db"))
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert "attack 'pgd'" in lines[0] and "'restarts'" in lines[0] and "greater than or equal to 1" in lines[0]
    assert not (tmp_path / "x.db").exists()


def test_broken_toml_and_missing_file(tmp_path):
    res = run("run", write_config(tmp_path, "name = [unclosed"))
    assert res.exit_code == 1 and "not valid TOML" in res.output
    res = run("run", str(tmp_path / "nope.toml"))
    assert res.exit_code == 1 and "config file not found" in res.output


def test_plugins_lists_roles_kinds_params_and_packages():
    res = run("plugins", "--json")
    infos = {(i["role"], i["name"]): i for i in json.loads(res.output)}
    pgd = infos[("attack", "pgd")]
    assert pgd["kind"] == "white-box" and pgd["params"]["restarts"] == 1
    assert pgd["package"] == "udc-arena" and pgd["version"]
    assert infos[("defense", "jpeg")]["kind"] == "gradient=bpda"
    text = run("plugins").output
    assert "restorers:" in text and "attacks:" in text and "defenses:" in text


def test_run_local_then_leaderboard_and_reproduce(tmp_path):
    db = str(tmp_path / "r.db")
    res = run("run", write_config(tmp_path, BASE), "--executor", "local", "--db", db, "--quiet")
    assert res.exit_code == 0, res.output
    assert "robust_psnr" in res.output and "arena dashboard --db" in res.output
    assert "tiny" in run("leaderboard", "--db", db).output
    import sqlite3
    key = sqlite3.connect(db).execute("select key from matches").fetchone()[0]
    res = run("reproduce", key[:8], "--db", db)
    assert res.exit_code == 0 and "reproduced" in res.output
    assert "adversarial batch differs from the stored one by 0.00e+00" in res.output
    res = CliRunner().invoke(main, ["reproduce", "zzzz", "--db", db])
    assert res.exit_code == 1 and "no stored match" in res.output
    # the stored batch downloads losslessly, and re-scoring it gives the stored scores
    from safetensors.numpy import load_file

    out = str(tmp_path / "adv.safetensors")
    res = run("adversarial", key[:8], "--db", db, "--out", out)
    assert res.exit_code == 0 and key in res.output
    adv = load_file(out)["adv"]
    con = sqlite3.connect(db)
    spec = json.loads(con.execute("select spec from matches where key = ?", (key,)).fetchone()[0])
    stored = [r[0] for r in con.execute("select s.adv_psnr from scores s join matches m on m.id = s.match_id "
                                         "where m.key = ? order by s.id", (key,))]
    assert rescored_psnr(spec, adv) == pytest.approx(stored, abs=1e-4)


def rescored_psnr(spec, adv):
    """Score a downloaded batch by hand: the restorer and defense of the match, its seed."""
    import torch

    from arena.data import load_data
    from arena.match import generator
    from arena.metrics import psnr
    from arena.plugins import load_registry
    from arena.threat import System

    registry = load_registry()
    d = spec["data"]
    data = load_data(d["name"], d["split"], images=d["images"], size=d["size"], seed=d["seed"])
    r = spec["restorer"]
    model = registry.create("restorer", r["name"], r["params"]).load("cpu")
    links = [registry.create("defense", x["name"], x["params"]) for x in spec["defense"]]
    code = data.code if registry.get("restorer", r["name"]).cls.needs_psf else None
    out = System(model, links, code)(torch.from_numpy(adv), generator(spec["seed"]))
    return psnr(out, data.hq).tolist()


def test_plugins_check_reports_failures():
    res = run("plugins", "check", "pgd")
    assert res.exit_code == 0 and "passes every conformance check" in res.output
    res = CliRunner().invoke(main, ["plugins", "check", "nosuch"])
    assert res.exit_code == 1 and "no installed" in res.output


def test_zoo_prints_the_table_and_names_unknown_restorers():
    res = run("zoo", "unet")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("UDC input: ") and lines[2].startswith("| restorer | params |")
    assert lines[-1].startswith("| unet | ") and "!" not in lines[-1]
    res = CliRunner().invoke(main, ["zoo", "nosuch"])
    assert res.exit_code == 1
    [line] = res.output.strip().splitlines()
    assert line.startswith("Error: unknown restorer 'nosuch' (registered: ") and "nafnet" in line


def test_train_parses_its_options_and_writes_weights(tmp_path):
    out = tmp_path / "out"
    res = run("train", "unet", "--steps", "4", "--size", "16", "--batch", "2", "--data-seeds", "1",
              "--synth-share", "0", "--param", "width=4", "--param", "levels=2", "--out", str(out),
              "--threads", "1", "--no-resume", "--quiet")
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"{out / 'unet.safetensors'}: clean PSNR ")
    from arena.weights import read_manifest

    config = read_manifest(out / "unet.safetensors")["config"]
    assert config["params"] == {"width": 4, "levels": 2}
    assert (config["steps"], config["size"], config["batch"], config["synth_share"]) == (4, 16, 2, 0.0)
    bad = CliRunner().invoke(main, ["train", "unet", "--param", "width"])
    assert bad.exit_code == 1 and "--param takes key=value, got 'width'" in bad.output


def test_the_train_commands_scene_choices_are_the_trainers():
    # the CLI lists them by hand (importing arena.data.augment at start-up would load torch)
    from arena.data.augment import SCENES

    listed = {name: p.type.choices for name, c in main.commands.items() for p in c.params if p.name == "scenes"}
    assert listed and all(list(choices) == list(SCENES) for choices in listed.values()), listed
