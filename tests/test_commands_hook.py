"""The register_commands hook: a plugin adds an `arena` command; a plugin that breaks in it does
not take the other commands with it."""

from __future__ import annotations

import types

import click
import pytest
from click.testing import CliRunner

from arena.cli import main
from arena.hookspecs import hookimpl
from arena.plugins import PluginError, load_commands


def hello_plugin() -> types.ModuleType:
    module = types.ModuleType("hello_plugin")

    @hookimpl
    def register_commands(cli):
        @cli.command()
        @click.argument("name")
        @click.option("--shout", is_flag=True)
        def hello(name, shout):
            """Greet NAME."""
            click.echo(f"hello, {name.upper() if shout else name}")

    module.register_commands = register_commands
    return module


@pytest.fixture
def fresh_main(monkeypatch):
    """`arena` as if just started: no plugin commands loaded; undone after the test."""
    monkeypatch.setattr(main, "commands", dict(main.commands))
    monkeypatch.setattr(main, "plugin_commands_loaded", False)
    return main


def test_a_plugin_module_adds_a_command():
    cli = click.Group("arena")
    assert load_commands(cli, modules=(hello_plugin(),), entrypoints=False) == {}
    res = CliRunner().invoke(cli, ["hello", "world", "--shout"])
    assert res.exit_code == 0 and res.output == "hello, WORLD\n"


def test_the_arena_cli_calls_the_hook_once(fresh_main, monkeypatch):
    calls = []

    def load(cli, modules=(), entrypoints=True):
        calls.append(cli)
        return load_commands(cli, modules=(hello_plugin(),), entrypoints=False)

    monkeypatch.setattr("arena.plugins.load_commands", load)
    runner = CliRunner()
    assert runner.invoke(main, ["hello", "you"]).output == "hello, you\n"
    assert runner.invoke(main, ["hello", "again"]).output == "hello, again\n"
    assert "hello" in runner.invoke(main, ["--help"]).output
    assert calls == [main]


def test_a_core_command_does_not_load_plugin_commands(fresh_main, monkeypatch):
    monkeypatch.setattr("arena.plugins.load_commands", lambda cli, **kw: pytest.fail("loaded"))
    assert CliRunner().invoke(main, ["data", "--help"]).exit_code == 0


def test_a_plugin_module_that_raises_is_an_error():
    module = types.ModuleType("boom_plugin")
    module.register_commands = hookimpl(lambda cli: 1 / 0)
    with pytest.raises(PluginError, match="plugin 'boom_plugin' failed in register_commands: "
                                          "ZeroDivisionError"):
        load_commands(click.Group("arena"), modules=(module,), entrypoints=False)


BOOM = '''
import click

from arena.hookspecs import hookimpl


@hookimpl
def register_commands(cli):
    @cli.command()
    def half():
        """Added just before the hook raises (test fixture)."""

    raise RuntimeError("commands exploded")
'''


@pytest.fixture
def installed_boom(tmp_path, monkeypatch):
    """An installed distribution whose `arena` plugin raises in register_commands, next to the
    built-in diffpure plugin (which adds train-purifier)."""
    (tmp_path / "arena_boom_commands.py").write_text(BOOM)
    info = tmp_path / "arena_boom_commands-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: arena-boom-commands\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[arena]\nboom = arena_boom_commands\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ARENA_PLUGINS", "boom,diffpure,tiny,identity,none")
    monkeypatch.delenv("ARENA_BLOCK_PLUGINS", raising=False)


def test_a_plugin_that_raises_is_left_out_and_other_commands_work(installed_boom, fresh_main):
    runner = CliRunner()
    res = runner.invoke(main, ["train-purifier", "--help"])
    assert res.exit_code == 0, res.output
    for option in ("--steps", "--out", "--size", "--seed"):
        assert option in res.output
    assert ("warning: plugin 'boom' failed in register_commands: RuntimeError: commands exploded"
            in res.stderr)
    assert "half" not in main.commands  # what the broken hook added before raising is gone
    res = runner.invoke(main, ["plugins"])
    assert res.exit_code == 0 and "tiny" in res.output
    res = runner.invoke(main, ["half"])
    assert res.exit_code == 2 and "No such command 'half'" in res.output
