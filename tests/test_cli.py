"""The command line: one-line errors, dry runs, listing, reproduce."""

import json

from click.testing import CliRunner

from arena.cli import main


def run(*args, **kw):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, **kw)


def write_config(tmp_path, body):
    p = tmp_path / "t.toml"
    p.write_text(body)
    return str(p)


BASE = '''
name = "cli"
[data]
images = 2
size = 16
[[restorers]]
name = "tiny"
[[attacks]]
name = "fgsm"
'''


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
    res = CliRunner().invoke(main, ["reproduce", "zzzz", "--db", db])
    assert res.exit_code == 1 and "no stored match" in res.output


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
