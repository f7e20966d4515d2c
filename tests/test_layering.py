"""The core (arena/) never imports the built-in plugins (plugins/, imported as arena_plugins)."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "arena"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__" and node.args:
            if isinstance(node.args[0], ast.Constant):
                names.add(str(node.args[0].value))
    return names


def test_core_never_imports_plugins():
    files = list(CORE.rglob("*.py"))
    assert len(files) > 10
    offenders = {
        str(f.relative_to(CORE.parent)): sorted(n for n in imported_modules(f)
                                                  if n.split(".")[0] in {"arena_plugins", "plugins"})
        for f in files
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}


def test_the_check_would_catch_an_offender(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from arena_plugins.attacks import pgd\n")
    assert "arena_plugins.attacks" in imported_modules(bad)


def test_every_builtin_module_has_an_entry_point():
    from importlib.metadata import entry_points

    plugins = CORE.parent / "plugins"
    modules = {
        "arena_plugins." + ".".join(p.relative_to(plugins).with_suffix("").parts)
        for p in plugins.rglob("*.py")
        if p.name != "__init__.py" and "hookimpl" in p.read_text()
    }
    registered = {ep.value for ep in entry_points(group="arena")}
    assert modules and modules <= registered, modules - registered
