"""Small shared builders for the arena's own tests."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest
import torch

from arena.api import Attack, AttackParams, Field
from arena.hookspecs import hookimpl
from arena.plan import parse_config
from arena.plugins import load_registry

SMALL = {
    "name": "small",
    "seed": 0,
    "threat_models": ["oblivious"],
    "data": {"name": "embedded", "split": "test", "images": 4, "size": 16},
    "restorers": ["identity", {"name": "tiny"}],
    "defenses": ["none", {"name": "jpeg", "quality": 50}],
    "attacks": ["fgsm", {"name": "pgd", "restarts": 1}],
    "budgets": [{"norm": "linf", "eps": "8/255", "steps": 3}],
    "samples_per_match": 1,
}


def config(**overrides):
    raw = {**SMALL, **overrides}
    return parse_config(raw)


class Cheat(Attack):
    """Breaks its budget on purpose: adds 3x eps (a broken-attack fixture)."""

    name = "cheat"

    class Params(AttackParams):
        factor: float = Field(3.0, gt=0)

    def perturb(self, target, lq, hq, budget, generator):
        return (lq + self.params.factor * budget.eps).clamp(0, 1)


class Boom(Attack):
    """Raises inside perturb (a faulty-plugin fixture)."""

    name = "boom"

    def perturb(self, target, lq, hq, budget, generator):
        raise RuntimeError("boom from a plugin")


class NaNAttack(Attack):
    """Returns NaNs."""

    name = "nan"

    def perturb(self, target, lq, hq, budget, generator):
        return torch.full_like(lq, float("nan"))


def module_with(*classes, role="attack") -> ModuleType:
    mod = ModuleType(f"testplugin_{'_'.join(c.name for c in classes)}")
    hook = {"attack": "register_attacks", "defense": "register_defenses", "restorer": "register_restorers"}[role]

    def register(register):
        for c in classes:
            register(c)

    setattr(mod, hook, hookimpl(register))
    return mod


def registry_with(*classes, role="attack"):
    return load_registry(modules=(module_with(*classes, role=role),))


def db_url(tmp_path: Path) -> str:
    return str(tmp_path / "arena.db")


def require_tool(found, name: str):
    """``found`` (a path, a URL) if the external tool ``name`` is there. Missing, the test is
    skipped, except under CI (``CI`` is "true" or "1"), where a skip would hide a broken setup:
    there it fails."""
    if found:
        return found
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI=true: {name} is required (scripts/test.sh installs it)", pytrace=False)
    pytest.skip(f"{name} is not installed (scripts/test.sh installs it as root)")


#: The smallest tournament a CLI test writes to a file: the tiny restorer, FGSM, 2 images of 16 px.
TINY_TOML = '''
[data]
images = 2
size = 16
[[restorers]]
name = "tiny"
[[attacks]]
name = "fgsm"
'''


from arena.store.views import scores_only  # noqa: E402,F401 - re-exported for the tests
