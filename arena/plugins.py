"""Plugin manager factory, component registry and listing.

Plugins are found through the ``arena`` entry-point group. ``ARENA_PLUGINS`` (comma-separated
entry-point names) keeps only those plugins; ``ARENA_BLOCK_PLUGINS`` drops the ones it names.
No plugin manager exists at import time: call ``load_registry()``.

An installed plugin that fails to import or to register is *broken*: it is left out, with its
reason in ``Registry.broken``, so that one bad distribution cannot stop every command.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy
from pydantic import ConfigDict

from arena import hookspecs
from arena.api import ArenaError, Attack, Component, ConfigError, Defense, Params, Restorer

ENTRY_POINT_GROUP = "arena"
ROLES: dict[str, tuple[str, type[Component]]] = {
    "restorer": ("register_restorers", Restorer),
    "attack": ("register_attacks", Attack),
    "defense": ("register_defenses", Defense),
}

#: What ``load_registry(strict=None)`` does: ``arena --strict`` sets it for one command.
STRICT = False

log = logging.getLogger(__name__)


class PluginError(ArenaError, RuntimeError):
    """A plugin could not be loaded or registered something invalid."""


@dataclass
class Entry:
    """A registered component class and where it came from."""

    cls: type[Component]
    role: str
    plugin: str
    package: str
    version: str
    unavailable: str | None = None

    @property
    def name(self) -> str:
        return self.cls.name


class AnyParams(Params):
    """The parameters of a placeholder: the component is missing, so nothing can be checked."""

    model_config = ConfigDict(extra="allow", frozen=True)


def placeholder(role: str, name: str, unavailable: str) -> Entry:
    """An unavailable stand-in for a component that is not registered (see ``Registry.get``)."""
    base = ROLES[role][1]
    cls = type(f"Missing{base.__name__}", (base,), {
        "__doc__": "Not registered: an installed plugin is broken.", "name": name, "Params": AnyParams})
    return Entry(cls, role, plugin="", package="", version="", unavailable=unavailable)


@dataclass
class Registry:
    entries: dict[str, dict[str, Entry]] = field(
        default_factory=lambda: {role: {} for role in ROLES}
    )
    #: Plugin name -> one-line reason, for plugins left out because they failed to load.
    broken: dict[str, str] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        table = self.entries[entry.role]
        other = table.get(entry.name)
        if other is not None:
            raise PluginError(
                f"{entry.role} '{entry.name}' is registered twice: by plugin '{other.plugin}' "
                f"({other.package}) and by plugin '{entry.plugin}' ({entry.package})"
            )
        table[entry.name] = entry

    def drop(self, plugin: str) -> None:
        """Forget every component ``plugin`` registered (it broke half-way)."""
        for table in self.entries.values():
            for name in [n for n, e in table.items() if e.plugin == plugin]:
                del table[name]

    def broken_note(self) -> str:
        return "; ".join(f"plugin '{p}' {why}" for p, why in sorted(self.broken.items()))

    def get(self, role: str, name: str, allow_unavailable: bool = False) -> Entry:
        """The entry of ``name``. With ``allow_unavailable`` and a broken plugin, an unknown name
        gives an unavailable placeholder: the broken plugin may be the one that provides it, so
        its matches are planned as skipped, with the plugin's error, instead of failing the plan."""
        table = self.entries[role]
        entry = table.get(name)
        if entry is None and allow_unavailable and self.broken:
            return placeholder(role, name, f"not registered; {self.broken_note()}")
        if entry is None:
            allowed = ", ".join(sorted(table)) or "none registered"
            note = f"; {self.broken_note()}" if self.broken else ""
            raise ConfigError(f"unknown {role} '{name}' (registered: {allowed}){note}")
        if entry.unavailable and not allow_unavailable:
            raise ConfigError(f"{role} '{name}' is unavailable: {entry.unavailable}")
        return entry

    def create(self, role: str, name: str, params: dict[str, Any] | None = None) -> Component:
        entry = self.get(role, name)
        return entry.cls(entry.cls.validate(params or {}))

    def all(self) -> list[Entry]:
        return [e for role in ROLES for e in sorted(self.entries[role].values(), key=lambda e: e.name)]


def _names(var: str) -> set[str] | None:
    raw = os.environ.get(var, "").strip()
    return {n.strip() for n in raw.split(",") if n.strip()} if raw else None


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, for warnings and listings."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, remembering which distribution each entry-point plugin came from and
    which entry points are broken (name -> one-line reason)."""

    def __init__(self):
        super().__init__("arena")
        self.dists: dict[str, tuple[str, str]] = {}
        self.broken: dict[str, str] = {}


def plugin_manager(modules: tuple[ModuleType, ...] = (), entrypoints: bool = True,
                   strict: bool | None = None) -> PluginManager:
    """A fresh plugin manager with the arena's hooks, the entry-point plugins and ``modules``.

    An entry point that fails to import or whose hooks pluggy rejects raises PluginError if
    ``strict`` (None: :data:`STRICT`), else it is left out and recorded in ``pm.broken``.
    """
    strict = STRICT if strict is None else strict
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    allow, block = _names("ARENA_PLUGINS"), _names("ARENA_BLOCK_PLUGINS") or set()
    if entrypoints:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in block or (allow is not None and ep.name not in allow):
                continue
            if pm.get_plugin(ep.name) is not None or ep.name in pm.broken:
                continue
            step = "failed to import"
            try:
                module = ep.load()
                step = "has invalid hooks"  # e.g. a hook whose argument is not named register
                pm.register(module, name=ep.name)
            except Exception as exc:  # a broken plugin must say which one it is
                reason = f"{step}: {one_line(exc)}"
                if strict:
                    raise PluginError(f"plugin '{ep.name}' ({ep.value}) {reason}"
                                      " (block it with ARENA_BLOCK_PLUGINS)") from exc
                if pm.get_plugin(ep.name) is not None:  # pluggy may have kept some of its hooks
                    pm.unregister(name=ep.name)
                pm.broken[ep.name] = reason
                continue
            dist = ep.dist
            pm.dists[ep.name] = (dist.name, dist.version) if dist else ("unknown", "")
    for module in modules:
        pm.register(module, name=module.__name__)
    return pm


def load_registry(modules: tuple[ModuleType, ...] = (), entrypoints: bool = True,
                  strict: bool | None = None) -> Registry:
    """Build a registry by calling every plugin's register_* hooks.

    An installed (entry-point) plugin that fails to import, or raises or registers something
    invalid in a hook, is broken: it goes into ``registry.broken`` with a one-line reason, a
    warning is logged, and every component it had registered is dropped, so a half-registered
    plugin never takes part. ``strict=True`` raises PluginError instead (None: :data:`STRICT`).
    ``modules`` are the caller's own code: their errors always raise.
    """
    strict = STRICT if strict is None else strict
    pm = plugin_manager(modules, entrypoints, strict)
    registry = Registry(broken=dict(pm.broken))
    for role, (hook_name, base) in ROLES.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            plugin = impl.plugin_name
            if plugin in registry.broken:
                continue
            package, version = pm.dists.get(plugin, ("local", ""))
            try:
                impl.function(register=_registrar(registry, plugin, package, version, role, base))
            except Exception as exc:
                why = str(exc) if isinstance(exc, PluginError) else one_line(exc)
                if strict or plugin not in pm.dists:  # modules, not entry points: the caller's
                    if isinstance(exc, PluginError):
                        raise
                    raise PluginError(f"plugin '{plugin}' failed in {hook_name}: {why}") from exc
                registry.broken[plugin] = f"failed in {hook_name}: {' '.join(why.split())}"
                registry.drop(plugin)
    for plugin, why in registry.broken.items():
        log.warning("plugin '%s' %s; it is left out (ARENA_BLOCK_PLUGINS=%s silences this, "
                    "arena --strict makes it an error)", plugin, why, plugin)
    return registry


def load_commands(cli, modules: tuple[ModuleType, ...] = (), entrypoints: bool = True) -> dict[str, str]:
    """Call every plugin's ``register_commands(cli)``; return the plugins that broke, with why.

    An installed plugin whose hook raises is broken: the commands it had added are removed, a
    warning is logged, and the other plugins' commands stay. ``modules`` are the caller's own
    code: their errors raise PluginError. Plugins that fail to import are left out as in
    :func:`plugin_manager` (``arena plugins`` lists them).
    """
    pm = plugin_manager(modules, entrypoints, strict=False)
    broken: dict[str, str] = {}
    for impl in pm.hook.register_commands.get_hookimpls():
        plugin, before = impl.plugin_name, dict(cli.commands)
        try:
            impl.function(cli=cli)
        except Exception as exc:
            why = f"failed in register_commands: {one_line(exc)}"
            if plugin not in pm.dists:
                raise PluginError(f"plugin '{plugin}' {why}") from exc
            cli.commands.clear()
            cli.commands.update(before)
            broken[plugin] = why
            log.warning("plugin '%s' %s; its commands are left out (ARENA_BLOCK_PLUGINS=%s "
                        "silences this)", plugin, why, plugin)
    return broken


def _registrar(registry: Registry, plugin: str, package: str, version: str, role: str,
               base: type[Component]):
    """The ``register`` callable one plugin's hook gets for one role."""

    def register(cls, unavailable: str | None = None):
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginError(
                f"plugin '{plugin}' registered {cls!r} as a {role}, but it is not a "
                f"subclass of arena.api.{base.__name__}"
            )
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name or name != name.lower() or ">" in name:
            raise PluginError(
                f"plugin '{plugin}' registered {cls.__name__} with an invalid name {name!r}: "
                "names are non-empty lowercase strings without '>'"
            )
        registry.add(Entry(cls, role, plugin, package, version, unavailable))

    return register


def describe(entry: Entry) -> dict[str, Any]:
    """A plain-data description of a registered component, for listings and the database."""
    cls = entry.cls
    info: dict[str, Any] = {
        "role": entry.role,
        "name": entry.name,
        "summary": cls.summary(),
        "params": cls.param_table(),
        "package": entry.package,
        "version": entry.version,
        "plugin": entry.plugin,
    }
    if entry.role == "restorer":
        info["kind"] = "needs psf" if cls.needs_psf else "image only"
    elif entry.role == "attack":
        info["kind"] = cls.kind
    else:
        flags = [f"gradient={cls.gradient}"]
        if cls.random:
            flags.append("random")
        if cls.hardens:
            flags.append("hardens")
        info["kind"] = ", ".join(flags)
    if entry.unavailable:
        info["unavailable"] = entry.unavailable
    return info
