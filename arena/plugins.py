"""Plugin manager factory, component registry and listing.

Plugins are found through the ``arena`` entry-point group. ``ARENA_PLUGINS`` (comma-separated
entry-point names) keeps only those plugins; ``ARENA_BLOCK_PLUGINS`` drops the ones it names.
No plugin manager exists at import time: call ``load_registry()``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from arena import hookspecs
from arena.api import Attack, Component, ConfigError, Defense, Restorer

ENTRY_POINT_GROUP = "arena"
ROLES: dict[str, tuple[str, type[Component]]] = {
    "restorer": ("register_restorers", Restorer),
    "attack": ("register_attacks", Attack),
    "defense": ("register_defenses", Defense),
}


class PluginError(RuntimeError):
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


@dataclass
class Registry:
    entries: dict[str, dict[str, Entry]] = field(
        default_factory=lambda: {role: {} for role in ROLES}
    )

    def add(self, entry: Entry) -> None:
        table = self.entries[entry.role]
        other = table.get(entry.name)
        if other is not None:
            raise PluginError(
                f"{entry.role} '{entry.name}' is registered twice: by plugin '{other.plugin}' "
                f"({other.package}) and by plugin '{entry.plugin}' ({entry.package})"
            )
        table[entry.name] = entry

    def get(self, role: str, name: str, allow_unavailable: bool = False) -> Entry:
        table = self.entries[role]
        entry = table.get(name)
        if entry is None:
            allowed = ", ".join(sorted(table)) or "none registered"
            raise ConfigError(f"unknown {role} '{name}' (registered: {allowed})")
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


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, remembering which distribution each entry-point plugin came from."""

    def __init__(self):
        super().__init__("arena")
        self.dists: dict[str, tuple[str, str]] = {}


def plugin_manager(modules: tuple[ModuleType, ...] = (), entrypoints: bool = True) -> PluginManager:
    """A fresh plugin manager with the arena's hooks, the entry-point plugins and ``modules``."""
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    allow, block = _names("ARENA_PLUGINS"), _names("ARENA_BLOCK_PLUGINS") or set()
    if entrypoints:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in block or (allow is not None and ep.name not in allow):
                continue
            if pm.get_plugin(ep.name) is not None:
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must say which one it is
                raise PluginError(
                    f"plugin '{ep.name}' ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
                    " (block it with ARENA_BLOCK_PLUGINS)"
                ) from exc
            dist = ep.dist
            pm.register(module, name=ep.name)
            pm.dists[ep.name] = (dist.name, dist.version) if dist else ("unknown", "")
    for module in modules:
        pm.register(module, name=module.__name__)
    return pm


def load_registry(modules: tuple[ModuleType, ...] = (), entrypoints: bool = True) -> Registry:
    """Build a registry by calling every plugin's register_* hooks."""
    pm = plugin_manager(modules, entrypoints)
    registry = Registry()
    for role, (hook_name, base) in ROLES.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            package, version = pm.dists.get(impl.plugin_name, ("local", ""))

            def register(cls, unavailable: str | None = None, *, _p=impl.plugin_name,
                         _pkg=package, _ver=version, _role=role, _base=base):
                if not (isinstance(cls, type) and issubclass(cls, _base)):
                    raise PluginError(
                        f"plugin '{_p}' registered {cls!r} as a {_role}, but it is not a "
                        f"subclass of arena.api.{_base.__name__}"
                    )
                name = getattr(cls, "name", None)
                if not isinstance(name, str) or not name or name != name.lower() or ">" in name:
                    raise PluginError(
                        f"plugin '{_p}' registered {cls.__name__} with an invalid name {name!r}: "
                        "names are non-empty lowercase strings without '>'"
                    )
                registry.add(Entry(cls, _role, _p, _pkg, _ver, unavailable))

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin '{impl.plugin_name}' failed in {hook_name}: {type(exc).__name__}: {exc}"
                ) from exc
    return registry


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
