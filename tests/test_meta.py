"""Tests about the project's own promises to plugin authors.

Every hook registers into its role and is documented under a heading with its exact signature; every built-in
plugin module is registered through an `arena` entry point, exactly like a third-party one; and
every built-in component passes the same conformance checks `arena plugins check` runs.
"""

from __future__ import annotations

import ast
import inspect
import types
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from arena import hookspecs, testing
from arena.api import Attack, Defense, Params, Restorer
from arena.hookspecs import hookimpl
from arena.plugins import ENTRY_POINT_GROUP, ROLES, PluginError, load_registry

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "plugins"
DISTRIBUTION = "udc-arena"
CHECKS = {"restorer": testing.check_restorer, "attack": testing.check_attack,
          "defense": testing.check_defense}

HOOKS = {name: f"{name}{inspect.signature(fn)}" for name, fn in vars(hookspecs).items()
         if callable(fn) and hasattr(fn, "arena_spec")}


def test_the_hookspecs_are_found():
    assert {"register_restorers", "register_attacks", "register_defenses"} <= set(HOOKS)


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_is_documented_under_its_exact_signature(hook):
    page = (ROOT / "README_PLUGINS.md").read_text()
    heading = f"### `{HOOKS[hook]}`"
    assert heading in page.splitlines(), f"README_PLUGINS.md has no heading line {heading!r}"


#: Hooks that add something other than components (tested in tests/test_commands_hook.py).
NON_COMPONENT_HOOKS = {"register_commands"}


@pytest.mark.parametrize("hook", sorted(set(HOOKS) - NON_COMPONENT_HOOKS))
def test_every_hook_registers_into_its_role(hook):
    """Whatever a hook is called, a component registered through it lands in its role's table."""
    role = next((r for r, (name, _) in ROLES.items() if name == hook), None)
    assert role is not None, f"hook {hook} is declared but arena.plugins builds no registry from it"
    base = ROLES[role][1]
    cls = type("Probe", (base,), {"__doc__": "A probe (no paper).", "name": f"probe-{role}"})
    module = types.ModuleType(f"probe_{role}")
    setattr(module, hook, hookimpl(lambda register: register(cls)))
    registry = load_registry(modules=(module,), entrypoints=False)
    entry = registry.get(role, f"probe-{role}")
    assert entry.cls is cls and entry.plugin == module.__name__


# -- built-in plugins are entry points --------------------------------------------------------


def hookimpl_modules() -> dict[str, Path]:
    """Import name -> file of every module under plugins/ that defines a @hookimpl function."""
    found = {}
    for path in sorted(PLUGINS.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and any(
                    (d.id if isinstance(d, ast.Name) else getattr(d, "attr", None)) == "hookimpl"
                    for d in node.decorator_list):
                rel = path.relative_to(PLUGINS).with_suffix("")
                found[".".join(("arena_plugins", *rel.parts))] = path
                break
    return found


def builtin_entry_points():
    return [ep for ep in entry_points(group=ENTRY_POINT_GROUP)
            if ep.dist is not None and ep.dist.name == DISTRIBUTION]


def test_every_builtin_plugin_module_has_an_entry_point():
    modules = hookimpl_modules()
    assert len(modules) >= 6, f"found only {sorted(modules)} under plugins/"
    registered = {ep.value for ep in builtin_entry_points()}
    missing = sorted(set(modules) - registered)
    assert not missing, (
        "built-in plugin modules without an `arena` entry point in the installed udc-arena "
        "(add to [project.entry-points.arena] in pyproject.toml, then `pip install -e .`):\n"
        + "\n".join(f'{suggested_name(m, modules)} = "{m}"' for m in missing))


def suggested_name(module: str, modules) -> str:
    """The module's own name, or name-role where two roles share it (entry-point names are one
    namespace: a second plugin of the same name would be skipped)."""
    *_, role, name = module.split(".")
    clash = sum(m.rsplit(".", 1)[-1] == name for m in modules) > 1
    return f"{name}-{role.rstrip('s')}" if clash else name


def test_builtin_entry_point_names_are_unique():
    names = [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)]
    assert len(names) == len(set(names)), sorted(n for n in set(names) if names.count(n) > 1)


def test_every_builtin_entry_point_is_a_plugin_module():
    modules = hookimpl_modules()
    stale = sorted(f"{ep.name} = {ep.value}" for ep in builtin_entry_points() if ep.value not in modules)
    assert not stale, f"entry points naming no module with a @hookimpl under plugins/: {stale}"


# -- built-in components conform ----------------------------------------------------------------


def builtin_components() -> tuple[list, str | None]:
    """One parameter per built-in component of the installed registry, or why none loaded."""
    try:
        registry = load_registry(strict=True)  # a broken built-in must fail, not vanish
    except PluginError as exc:  # a broken plugin fails one test below, not the collection
        return [], str(exc)
    params = []
    for entry in registry.all():
        if entry.package != DISTRIBUTION:  # third-party plugins are their authors' to check
            continue
        marks = [pytest.mark.skip(reason=f"unavailable: {entry.unavailable}")] if entry.unavailable else []
        params.append(pytest.param(entry, id=f"{entry.role}-{entry.name}", marks=marks))
    return params, None


COMPONENTS, REGISTRY_ERROR = builtin_components()


def test_the_registry_of_installed_plugins_loads():
    assert REGISTRY_ERROR is None, REGISTRY_ERROR
    assert len(COMPONENTS) >= 6


@pytest.mark.slow
@pytest.mark.parametrize("entry", COMPONENTS)
def test_builtin_component_passes_the_conformance_checks(entry, tmp_path):
    problems = CHECKS[entry.role](entry.cls, **checkpoint_params(entry, tmp_path))
    assert problems == [], f"{entry.role} '{entry.name}' ({entry.plugin}): " + "; ".join(problems)


def checkpoint_params(entry, tmp_path) -> dict:
    """A restorer built from its checkpoint alone (`pretrained`) is checked on a small one."""
    field = entry.cls.Params.model_fields.get("weights") if entry.role == "restorer" else None
    if field is None or not field.is_required():
        return {}
    import torch
    from test_weights_import import basicsr_nafnet

    torch.save(basicsr_nafnet().state_dict(), tmp_path / "nafnet.pth")
    return {"params": {"weights": str(tmp_path / "nafnet.pth")}}


@pytest.mark.parametrize("entry", COMPONENTS)
def test_builtin_component_follows_the_component_contract(entry):
    """A stable lowercase name, a one-line summary naming its source, described parameters."""
    cls = entry.cls
    base = {"restorer": Restorer, "attack": Attack, "defense": Defense}[entry.role]
    assert issubclass(cls, base) and cls.name == cls.name.lower()
    assert cls.summary(), f"{entry.name}: no docstring summary"
    assert issubclass(cls.Params, Params)
    undescribed = [k for k, f in cls.Params.model_fields.items() if not f.description]
    assert not undescribed, f"{entry.role} '{entry.name}': parameters without a description: {undescribed}"
