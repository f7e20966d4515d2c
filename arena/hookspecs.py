"""The arena's hooks. A plugin is a module with ``@hookimpl`` functions of these names.

Every hook has the form ``register_things(register)``: the plugin calls ``register(cls)`` once
per component class it provides. Built-in components are registered by the same hooks, through
the same ``arena`` entry-point group, as third-party ones.
"""

from __future__ import annotations

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
