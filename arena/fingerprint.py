"""Code fingerprints: results follow code.

A component's fingerprint hashes the source files its class comes from: the module that defines
it, its base classes' modules, and every module of the same top-level package that those
modules use (transitively), plus a restorer's default weights file. It goes into every match's
key, so changing a plugin's code or weights reruns exactly the matches it took part in. The
arena's own core is not part of it (``code_version`` records it per tournament).
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import types
from functools import lru_cache
from pathlib import Path


def _top(module_name: str) -> str:
    return module_name.split(".")[0]


def _related_modules(cls: type) -> list[types.ModuleType]:
    """The modules behind ``cls`` within its own top-level package, found by following bases
    and module-level references."""
    top = _top(cls.__module__)
    seen: dict[str, types.ModuleType] = {}
    todo = [sys.modules.get(c.__module__) for c in cls.__mro__ if _top(c.__module__) == top]
    while todo:
        mod = todo.pop()
        if mod is None or mod.__name__ in seen:
            continue
        seen[mod.__name__] = mod
        for value in vars(mod).values():
            name = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
            if isinstance(name, str) and _top(name) == top and name not in seen:
                todo.append(sys.modules.get(name))
    return [seen[k] for k in sorted(seen)]


def _source(mod: types.ModuleType, cls: type) -> bytes:
    path = getattr(mod, "__file__", None)
    if path and Path(path).is_file():
        return Path(path).read_bytes()
    try:  # a module built in memory (tests): the class's own source, where Python has it
        return inspect.getsource(cls).encode()
    except (OSError, TypeError):
        return f"{cls.__module__}.{cls.__qualname__}".encode()


@lru_cache(maxsize=None)
def fingerprint(cls: type) -> str:
    """16 hex digits over the code (and default weights) of a component class."""
    h = hashlib.sha256()
    for mod in _related_modules(cls):
        h.update(mod.__name__.encode() + b"\0" + _source(mod, cls) + b"\0")
    weights = getattr(cls, "weights", None)
    if weights is not None and Path(weights).is_file():
        h.update(Path(weights).read_bytes())
    return h.hexdigest()[:16]
