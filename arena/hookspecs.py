"""The arena's hooks. A plugin is a module with ``@hookimpl`` functions of these names.

The component hooks have the form ``register_things(register)``: the plugin calls
``register(cls)`` once per component class it provides. ``register_commands(cli)`` adds
commands to ``arena``. Built-in plugins use the same hooks, through the same ``arena``
entry-point group, as third-party ones.
"""

import click
import pluggy

hookspec = pluggy.HookspecMarker("arena")
hookimpl = pluggy.HookimplMarker("arena")


@hookspec
def register_restorers(register):
    """Register restorer classes.

    Called once when the plugin manager is built. ``register(cls)`` takes a subclass of
    ``arena.api.Restorer`` with a unique lowercase ``name``. Return nothing.
    """


@hookspec
def register_attacks(register):
    """Register attack classes.

    Called once when the plugin manager is built. ``register(cls)`` takes a subclass of
    ``arena.api.Attack`` with a unique lowercase ``name`` and a ``kind`` (``white-box``,
    ``score-based``, ``decision-free`` or ``transfer``). Return nothing.
    """


@hookspec
def register_defenses(register):
    """Register defense classes.

    Called once when the plugin manager is built. ``register(cls)`` takes a subclass of
    ``arena.api.Defense`` with a unique lowercase ``name`` and its declared ``gradient`` rule,
    ``random`` and ``hardens`` flags. Return nothing.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``arena`` command line.

    Called once per process by ``arena.cli``, the first time the CLI looks up a command it does
    not define itself or lists its commands (``arena --help``), so the core's own commands do not
    import every plugin. ``cli`` is the ``arena`` click group: add commands with
    ``@cli.command()`` or ``cli.add_command(cmd)``. A plugin that raises here is left out, with a
    warning; the commands it added are removed. Return nothing.
    """
