"""examples/arena-example-plugin is a working plugin distribution.

It is copied to a scratch folder (building it in place would leave build/ and *.egg-info in
the checkout), pip-installed into a throwaway environment layered on this one (the PluginEnv of
test_docs: the shared environment never sees it), its own tests are run, and it competes in a
small tournament run by the `arena` command.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from test_docs import PluginEnv

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "arena-example-plugin"

pytestmark = pytest.mark.slow

CONFIG = """
name = "example"
threat_models = ["oblivious", "adaptive"]
eot_samples = 2
restorers = ["tiny"]
defenses = ["none", "randresize"]
attacks = ["fgsm", "signhunter"]
samples_per_match = 0

[data]
images = 2
size = 16

[[budgets]]
eps = "8/255"
steps = 3
queries = 40
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    src = tmp_path_factory.mktemp("example") / "arena-example-plugin"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info",
                                                                 "__pycache__", ".pytest_cache"))
    penv = PluginEnv(tmp_path_factory.mktemp("example-env") / "venv")
    done = penv.run(penv.argv(["pip", "install", str(src)]), src.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return penv, src


def test_the_distribution_declares_its_plugins_in_the_arena_group():
    import tomllib

    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    assert set(project["entry-points"]["arena"].values()) == {
        "arena_example_plugin.signhunter", "arena_example_plugin.resize"}
    assert any(dep.startswith("udc-arena") for dep in project["dependencies"])
    assert (EXAMPLE / "README.md").exists()


def test_its_own_tests_pass(installed):
    penv, src = installed
    done = penv.run(penv.argv(["pytest", "-q", "tests"]), src)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed[1]) >= 6, done.stdout[-2000:]
    assert "skipped" not in done.stdout


@pytest.fixture(scope="module")
def tournament_db(installed, tmp_path_factory):
    penv, _ = installed
    folder = tmp_path_factory.mktemp("example-run")
    (folder / "example.toml").write_text(CONFIG)
    done = penv.run(penv.argv(["arena", "run", "example.toml", "--executor", "local",
                               "--db", "example.db", "--quiet"]), folder)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "8 matches planned; this run: 8 done" in done.stdout, done.stdout
    from arena.store.db import open_reader

    return open_reader(str(folder / "example.db"))


def test_it_competes_in_a_tournament(tournament_db):
    from arena.store import queries

    rows = queries.matches(tournament_db)
    assert len(rows) == 8 and {r["status"] for r in rows} == {"done"}, \
        [(r["attack"], r["defense"], r["reason"]) for r in rows if r["status"] != "done"]
    [t] = queries.tournaments(tournament_db)
    assert t["plugin_versions"]["example-signhunter"] == "arena-example-plugin 0.1.0"
    assert t["plugin_versions"]["example-randresize"] == "arena-example-plugin 0.1.0"
    for r in rows:
        if r["attack"] == "signhunter":
            assert r["versions"]["attack:signhunter"].startswith("arena-example-plugin 0.1.0 ")
            assert r["attack_kind"] == "score-based" and r["gradient_calls"] == 0
            scores = queries.scores_of(tournament_db, r["id"])
            assert [s["queries"] for s in scores] == [40, 40]  # the whole budget, not one more
            assert all(s["adv_psnr"] < s["clean_psnr"] for s in scores)
        if r["defense"] == "randresize" and r["threat"] == "adaptive" and r["attack"] == "fgsm":
            assert r["eot"] == 2 and r["gradient_calls"] == 1


def test_random_defense_is_attacked_with_eot_and_not_flagged(tournament_db):
    from arena.store import views

    flags = [f for f in views.flags(tournament_db) if f["defense"] == "randresize"]
    assert not [f for f in flags if f["flag"] == "no-eot"], flags
