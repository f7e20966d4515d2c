"""A worker keeps restorers, defenses and clean restorations warm between matches.

Ray actors wrap it; the in-process executor uses it directly. It receives matches as plain
data and rebuilds components by name from its own plugin registry.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from arena.api import ConfigError
from arena.data import UDCData
from arena.match import Clean, Outcome, clean_pass, evaluate
from arena.plan import Match, Spec
from arena.plugins import load_registry
from arena.threat import System


def spec_id(spec: Spec) -> str:
    return spec.model_dump_json()


def hardening_link(match: Match, registry) -> Spec | None:
    """The chain's one hardening link, if any (a chain may change the weights only once)."""
    links = [s for s in match.defense if registry.get("defense", s.name).cls.hardens]
    if len(links) > 1:
        raise ConfigError(f"defense chain '{match.defense_label}' has more than one hardening link")
    return links[0] if links else None


class Worker:
    def __init__(self, data: UDCData, hardened: dict[str, str] | None = None,
                 device: str | None = None, threads: int | None = None, samples: int = 0,
                 registry=None):
        if threads:
            # Ray starts workers with one torch thread; use the CPUs this worker was given
            torch.set_num_threads(max(1, int(threads)))
        self.registry = registry or load_registry()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.data = data
        self.hardened = hardened or {}
        self.samples = samples
        self._models: dict[tuple[str, str | None], torch.nn.Module] = {}
        self._clean: dict[tuple, Clean] = {}

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return f"cuda:{torch.cuda.get_device_name(self.device)}"
        return "cpu"

    def model(self, spec: Spec, weights: str | None = None) -> torch.nn.Module:
        key = (spec_id(spec), weights)
        if key not in self._models:
            restorer = self.registry.create("restorer", spec.name, spec.params)
            self._models[key] = restorer.load(self.device, weights=weights)
        return self._models[key]

    def system(self, match: Match) -> System:
        link = hardening_link(match, self.registry)
        weights = None
        if link is not None:
            weights = self.hardened[hardened_key(match.restorer, link, match, self.registry)]
        model = self.model(match.restorer, weights)
        links = [self.registry.create("defense", s.name, s.params) for s in match.defense]
        needs_psf = self.registry.get("restorer", match.restorer.name).cls.needs_psf
        code = self.data.code.to(self.device) if needs_psf else None
        return System(model, links, code)

    def surrogate(self, name: str, params: dict | None = None) -> System:
        """An undefended restorer from the zoo, for transfer attacks."""
        spec = Spec(name=name, params=self.registry.get("restorer", name).cls.validate(params or {}).model_dump(mode="json"))
        needs_psf = self.registry.get("restorer", name).cls.needs_psf
        return System(self.model(spec), [], self.data.code.to(self.device) if needs_psf else None)

    @staticmethod
    def _clean_key(match: Match) -> tuple:
        return (spec_id(match.restorer), tuple(spec_id(s) for s in match.defense), match.seed)

    def clean(self, match: Match, system: System) -> Clean:
        key = self._clean_key(match)
        if key not in self._clean:
            self._clean[key] = clean_pass(system, self.data.lq.to(self.device),
                                          self.data.hq.to(self.device), match.seed)
        return self._clean[key]

    def run(self, match: Match | dict[str, Any]) -> dict[str, Any]:
        """Evaluate one match; never raises for a plugin's fault, returns a failed outcome."""
        if isinstance(match, dict):
            match = Match(**match)
        started = time.time()
        t0 = time.perf_counter()
        try:
            system = self.system(match)
            clean = self.clean(match, system)
            attack = self.registry.create("attack", match.attack.name, match.attack.params)
            outcome = evaluate(match, system, attack, self.data, clean, self.samples, self.surrogate)
        except Exception as exc:
            outcome = Outcome("failed", reason=f"{type(exc).__name__}: {exc}", error=traceback.format_exc())
        outcome.timings["total"] = time.perf_counter() - t0
        return {"key": match.key, "device": self.device_name(), "node": ray_node(), **outcome.__dict__,
                "defense_ms_per_mp": self._clean_cost(match), "started_at": started,
                "finished_at": time.time()}

    def _clean_cost(self, match: Match) -> float | None:
        c = self._clean.get(self._clean_key(match))
        return c.defense_ms_per_mp if c else None


def ray_node() -> str | None:
    """The Ray node this worker runs on, if it runs under Ray."""
    if "ray" not in sys.modules:
        return None
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def hardened_key(restorer: Spec, link: Spec, match: Match, registry) -> str:
    """Content key of a hardened restorer: what it was built from (including the versions of
    the plugins that built it), not which match asked."""
    import hashlib
    import json

    from arena.weights import sha256_file

    versions = [registry.get(role, s.name).version for role, s in (("restorer", restorer), ("defense", link))]
    base = registry.get("restorer", restorer.name).cls.weights
    versions.append(sha256_file(base) if base is not None and Path(base).exists() else None)
    blob = json.dumps({"restorer": restorer.model_dump(mode="json"), "defense": link.model_dump(mode="json"),
                       "versions": versions,
                       "data": match.data.model_dump(mode="json", exclude={"split", "images"}),
                       "seed": match.seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]
