"""A broken third-party plugin is left out, not fatal; `arena plugins check` always returns.

The offending plugins are real distributions: modules plus a ``*.dist-info`` with an ``arena``
entry-point group, found on ``sys.path`` (in-process) or ``PYTHONPATH`` (the CLI).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import config

from arena.api import ConfigError
from arena.plan import plan
from arena.plugins import PluginError, load_registry
from arena.timeout import Timeout, deadline

ARENA = Path(sys.executable).parent / "arena"

MODULES = {
    "arena_contain_badimport": '''
raise ValueError("no weights for you")
''',
    "arena_contain_badhook": '''
from arena.api import Attack, Restorer
from arena.hookspecs import hookimpl


class HalfRestorer(Restorer):
    """Registered by a plugin that breaks later (test fixture)."""
    name = "halfrestorer"


class HalfAttack(Attack):
    """Registered just before its hook raises (test fixture)."""
    name = "halfattack"


@hookimpl
def register_restorers(register):
    register(HalfRestorer)


@hookimpl
def register_attacks(register):
    register(HalfAttack)
    raise RuntimeError("hook exploded")
''',
    "arena_contain_sleepy": '''
import time

from arena.api import Attack
from arena.hookspecs import hookimpl


class Sleepy(Attack):
    """Never returns (test fixture)."""
    name = "sleepy"

    def perturb(self, target, lq, hq, budget, generator):
        time.sleep(1000)


@hookimpl
def register_attacks(register):
    register(Sleepy)
''',
    "arena_contain_boomy": '''
from arena.api import Attack
from arena.hookspecs import hookimpl


class Boomy(Attack):
    """Raises as soon as it is built (test fixture)."""
    name = "boomy"

    def __init__(self, params=None):
        raise RuntimeError("kaboom\\nsecond line")


@hookimpl
def register_attacks(register):
    register(Boomy)
''',
}
ENTRY_POINTS = {"badimport": "arena_contain_badimport", "badhook": "arena_contain_badhook",
                "sleepy": "arena_contain_sleepy", "boomy": "arena_contain_boomy"}
#: The built-ins the tests' configs use; loading only these keeps every CLI call short.
BUILTINS = "identity,tiny,none,jpeg,fgsm,pgd"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A folder holding an installed distribution `arena-containment-test` with four plugins."""
    root = tmp_path_factory.mktemp("site")
    for module, source in MODULES.items():
        (root / f"{module}.py").write_text(source)
    info = root / "arena_containment_test-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: arena-containment-test\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[arena]\n" + "".join(f"{n} = {m}\n" for n, m in ENTRY_POINTS.items()))
    return root


@pytest.fixture
def installed(site, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("ARENA_PLUGINS", f"{BUILTINS},badimport,badhook")
    monkeypatch.delenv("ARENA_BLOCK_PLUGINS", raising=False)
    return site


def arena(site: Path, *args: str, plugins: str | None = None, timeout: float = 120):
    env = {k: v for k, v in os.environ.items() if k not in ("ARENA_PLUGINS", "ARENA_BLOCK_PLUGINS")}
    env["PYTHONPATH"] = str(site)
    if plugins is not None:
        env["ARENA_PLUGINS"] = plugins
    return subprocess.run([str(ARENA), *args], env=env, capture_output=True, text=True, timeout=timeout)


# -- the registry -------------------------------------------------------------------------------


def test_broken_plugins_are_recorded_and_the_rest_loads(installed):
    registry = load_registry()
    assert registry.broken["badimport"] == "failed to import: ValueError: no weights for you"
    assert registry.broken["badhook"] == "failed in register_attacks: RuntimeError: hook exploded"
    assert registry.get("attack", "fgsm").plugin == "fgsm"
    # what badhook registered before raising, in that hook and in an earlier one, is dropped
    assert "halfattack" not in registry.entries["attack"]
    assert "halfrestorer" not in registry.entries["restorer"]


def test_strict_raises_for_either_kind_of_breakage(installed, monkeypatch):
    monkeypatch.setenv("ARENA_PLUGINS", "fgsm,badimport")
    with pytest.raises(PluginError, match=r"plugin 'badimport' \(arena_contain_badimport\) failed to "
                                          r"import: ValueError: no weights for you"):
        load_registry(strict=True)
    monkeypatch.setenv("ARENA_PLUGINS", "fgsm,badhook")
    with pytest.raises(PluginError, match="plugin 'badhook' failed in register_attacks: RuntimeError"):
        load_registry(strict=True)


def test_a_broken_plugins_component_plans_as_skipped(installed):
    registry = load_registry()
    t = config(attacks=["fgsm", {"name": "badimport", "strength": 3}])
    matches = plan(t, registry)
    planned = [m for m in matches if m.status == "planned"]
    skipped = [m for m in matches if m.status == "skipped"]
    assert len(planned) == len(skipped) == 4  # 2 restorers x 2 defenses x each attack
    assert {m.attack.name for m in planned} == {"fgsm"}
    assert {m.attack.name for m in skipped} == {"badimport"}
    reason = skipped[0].reason
    assert reason.startswith("attack 'badimport' is unavailable: not registered; ")
    assert "plugin 'badimport' failed to import: ValueError: no weights for you" in reason
    assert "plugin 'badhook' failed in register_attacks" in reason
    assert skipped[0].attack.params == {"strength": 3}  # a placeholder accepts any parameters


def test_an_unknown_name_is_still_an_error_when_no_plugin_is_broken(installed, monkeypatch):
    monkeypatch.setenv("ARENA_PLUGINS", BUILTINS)
    with pytest.raises(ConfigError, match="unknown attack 'badimport'"):
        plan(config(attacks=["fgsm", "badimport"]), load_registry())


# -- the command line ---------------------------------------------------------------------------


def test_plugins_lists_broken_plugins_and_the_builtins(site):
    res = arena(site, "plugins", plugins=f"{BUILTINS},badimport,badhook")
    assert res.returncode == 0, res.stderr
    listing = res.stdout.split("broken plugins")[1].splitlines()
    assert any(ln.split()[:1] == ["badimport"] and "failed to import: ValueError: no weights for you" in ln
               for ln in listing)
    assert any(ln.split()[:1] == ["badhook"] and "failed in register_attacks: RuntimeError" in ln
               for ln in listing)
    assert any(ln.split()[:2] == ["fgsm", "[white-box]"] for ln in res.stdout.splitlines())
    warnings = res.stderr.strip().splitlines()
    assert len(warnings) == 2 and "Traceback" not in res.stderr  # once each, one line each
    assert all(w.startswith("warning: plugin 'bad") for w in warnings)

    res = arena(site, "plugins", "--json", plugins=f"{BUILTINS},badimport,badhook")
    items = json.loads(res.stdout)
    broken = {i["name"]: i["broken"] for i in items if i.get("broken")}
    assert broken == {"badimport": "failed to import: ValueError: no weights for you",
                      "badhook": "failed in register_attacks: RuntimeError: hook exploded"}
    assert ("attack", "fgsm") in {(i["role"], i["name"]) for i in items}


def test_strict_flag_makes_a_broken_plugin_a_one_line_error(site):
    res = arena(site, "--strict", "plugins", plugins="fgsm,badimport")
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [
        "Error: plugin 'badimport' (arena_contain_badimport) failed to import: ValueError: no weights "
        "for you (block it with ARENA_BLOCK_PLUGINS)"]


def test_dry_run_plans_the_broken_plugins_matches_as_skipped(site, tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text('name = "c"\nrestorers = ["tiny"]\nattacks = ["fgsm", "badimport"]\n'
                   "[data]\nimages = 2\nsize = 16\n")
    res = arena(site, "run", str(cfg), "--dry-run", "--db", str(tmp_path / "x.db"),
                plugins="tiny,none,fgsm,badimport")
    assert res.returncode == 0, res.stderr
    assert "2 matches: 1 to run, 1 skipped" in res.stdout
    assert ("skipped (1): attack 'badimport' is unavailable: not registered; plugin 'badimport' "
            "failed to import: ValueError: no weights for you") in res.stdout
    assert not (tmp_path / "x.db").exists()


def test_check_of_an_attack_that_never_returns_times_out(site):
    started = time.monotonic()
    res = arena(site, "plugins", "check", "sleepy", "--timeout", "3", plugins="sleepy")
    assert time.monotonic() - started < 60
    assert res.returncode == 1
    fails = [ln for ln in res.stdout.splitlines() if ln.startswith("FAIL")]
    assert fails == ["FAIL attack 'sleepy': Timeout: the conformance check timed out after 3 s"]


def test_check_of_a_plugin_that_raises_is_one_line(site):
    res = arena(site, "plugins", "check", "boomy", plugins="boomy")
    assert res.returncode == 1
    assert "Traceback" not in res.stdout + res.stderr
    fails = [ln for ln in res.stdout.splitlines() if ln.startswith("FAIL")]
    assert fails == ["FAIL attack 'boomy': RuntimeError: kaboom second line"]


def test_check_works_without_pytest_installed():
    """pytest is a test extra; plugins import arena.testing, so it must import without pytest."""
    code = ("import sys; sys.modules['pytest'] = None\n"  # what `import pytest` meets when absent
            "from arena.cli import main\n"
            "main(['plugins', 'check', 'tiny'])\n")
    env = dict(os.environ, ARENA_PLUGINS="tiny,fgsm")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "warning" not in res.stderr
    assert "restorer 'tiny' (udc-arena " in res.stdout and "passes every conformance check" in res.stdout


# -- deadline -----------------------------------------------------------------------------------


def test_deadline_interrupts_a_sleep_and_restores_the_handler():
    before = signal.getsignal(signal.SIGALRM)
    started = time.monotonic()
    with pytest.raises(Timeout, match=r"^a nap timed out after 0.2 s$"):
        with deadline(0.2, "a nap"):
            time.sleep(100)
    assert time.monotonic() - started < 5
    assert signal.getsignal(signal.SIGALRM) is before
    with deadline(0.2, "quick"):
        pass
    time.sleep(0.5)  # a deadline that was not reached must not fire later


def test_deadline_gets_past_except_exception():
    give_up = time.monotonic() + 5
    with pytest.raises(Timeout):
        with deadline(0.2, "a stubborn loop"):
            while time.monotonic() < give_up:
                try:
                    time.sleep(0.01)
                except Exception:  # as a careless plugin would
                    pass


def test_deadline_fires_again_after_being_swallowed_once():
    swallowed = []
    started = time.monotonic()
    with pytest.raises(Timeout):
        with deadline(0.2, "a swallowing plugin"):
            try:
                time.sleep(5)
            except BaseException as exc:  # swallowed, as a careless plugin would
                swallowed.append(exc)
            time.sleep(5)
    assert len(swallowed) == 1 and isinstance(swallowed[0], Timeout)
    assert time.monotonic() - started < 3
