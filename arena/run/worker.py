"""A worker keeps restorers, defenses and clean restorations warm between matches.

Ray actors wrap it; the in-process executor uses it directly. It receives matches as plain
data and rebuilds components by name from its own plugin registry.
"""

from __future__ import annotations

import hashlib
import sys
import time
import traceback
from typing import Any

import torch

from arena.data import UDCData, data_hash
from arena.defaults import default_device
from arena.match import Clean, Outcome, Watch, clean_pass, evaluate, probe, rescore
from arena.memory import PeakMemory
from arena.plan import Match, Spec
from arena.plugins import load_registry
from arena.run.harden import hardened_key, hardening_link, materialise
from arena.threat import System


def spec_id(spec: Spec) -> str:
    return spec.model_dump_json()


class Worker:
    def __init__(self, data: UDCData, hardened: dict[str, str] | None = None,
                 device: str | None = None, threads: int | None = None, samples: int = 0,
                 registry=None):
        if threads:
            # Ray starts workers with one torch thread; use the CPUs this worker was given
            torch.set_num_threads(max(1, int(threads)))
        self.registry = registry or load_registry()
        self.device = default_device(device)
        self.data = data
        self.hardened = hardened or {}
        self.samples = samples
        self._models: dict[tuple[str, str | None], torch.nn.Module] = {}
        self._pristine: dict[int, dict[str, torch.Tensor]] = {}  # id(model) -> its weights
        self._clean: dict[tuple, Clean] = {}
        self._probes: dict[tuple, dict[str, Any]] = {}
        self._eot: dict[tuple, dict] = {}  # per system: the suite's EOT rule results
        self._data_hash = self._fingerprint()
        # bytes are immutable: a plugin that finds this copy cannot change what is put back
        self._data_bytes = tuple(None if t is None else t.numpy().tobytes() for t in self._tensors())
        self.watch = Watch()

    def ready(self) -> bool:
        """Answered once the actor is placed and built: the executor's cue to give it work."""
        return True

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return f"cuda:{torch.cuda.get_device_name(self.device)}"
        return "cpu"

    def model(self, spec: Spec, weights: str | None = None) -> torch.nn.Module:
        key = (spec_id(spec), weights)
        if key not in self._models:
            restorer = self.registry.create("restorer", spec.name, spec.params)
            model = restorer.load(self.device, weights=weights)
            self._pristine[id(model)] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.watch.watch(model)
            self._models[key] = model
        return self._models[key]

    def _links(self, match: Match) -> list:
        return [self.registry.create("defense", s.name, s.params) for s in match.defense]

    def system(self, match: Match) -> System:
        link = hardening_link(match, self.registry)
        weights = None
        if link is not None:
            key = hardened_key(match.restorer, link, match, self.registry)
            local = getattr(self.hardened, "local", None)  # built on another host: copy it here
            weights = local(key) if local is not None else self.hardened[key]
        model = self.model(match.restorer, weights)
        return System(model, self._links(match), self._code(match.restorer.name))

    def _code(self, restorer: str):
        needs_psf = self.registry.get("restorer", restorer).cls.needs_psf
        return self.data.code.to(self.device) if needs_psf else None

    def surrogate(self, name: str, params: dict | None = None) -> System:
        """An undefended restorer from the zoo, for transfer attacks."""
        spec = Spec(name=name, params=self.registry.get("restorer", name).cls.validate(params or {}).model_dump(mode="json"))
        return System(self.model(spec), [], self._code(name))

    @staticmethod
    def _clean_key(match: Match) -> tuple:
        return (spec_id(match.restorer), tuple(spec_id(s) for s in match.defense), match.seed)

    def clean(self, match: Match, system: System) -> Clean:
        key = self._clean_key(match)
        if key not in self._clean:
            c = clean_pass(system, self.data.lq.to(self.device), self.data.hq.to(self.device), match.seed)
            self._clean[key] = (c, _digest(c.out, c.psnr, c.ssim))
        return self._clean[key][0]

    def probes(self, match: Match, system: System) -> dict[str, Any]:
        """The system's declarations, probed once per worker before its first match."""
        key = self._clean_key(match)[:2]
        if key not in self._probes:
            seed = int(hashlib.sha256(repr(key).encode()).hexdigest()[:8], 16)  # unseen per system
            fresh = lambda: System(system.model, self._links(match), system.code)  # noqa: E731
            self._probes[key] = probe(system, fresh, self.data.lq.to(self.device), seed)
        return self._probes[key]

    def _tensors(self) -> tuple:
        d = self.data  # the scene threat model's noise draw is scored: it is guarded like lq
        return (d.lq, d.hq, d.psf, d.code, d.scene, d.noise, d.photons, d.read_noise)

    def _fingerprint(self) -> str:
        return data_hash(*self._tensors()[:4]) + _digest(*(t for t in self._tensors()[4:] if t is not None))

    def integrity(self) -> str | None:
        """What a component changed that it was never given: the data, a cached clean
        restoration, or a model's weights. Whatever it was is put back (or dropped, to be
        recomputed), so no other match sees the damage."""
        problem = None
        if self._fingerprint() != self._data_hash:
            problem = "modified the arena's own copy of the images"
            for t, raw in zip(self._tensors(), self._data_bytes):
                if t is not None:
                    t.data.copy_(torch.frombuffer(bytearray(raw), dtype=t.dtype).view_as(t))
            self._clean.clear()
            if self._fingerprint() != self._data_hash:  # the backup itself was replaced
                raise RuntimeError("the worker's backup of the data was replaced: it cannot be restored, so every later match on this worker fails")
        if any(_digest(c.out, c.psnr, c.ssim) != d for c, d in self._clean.values()):
            problem = problem or "modified the arena's cached clean restorations"
            self._clean.clear()
        for key, model in list(self._models.items()):
            if self.watch.tampered(model):  # hooks, attributes, mode: rebuilt from disk next time
                problem = problem or "tampered with the restorer (its hooks, attributes or mode)"
                del self._models[key]
                self._clean.clear()
                continue
            pristine = self._pristine[id(model)]
            state = model.state_dict()
            if any(not torch.equal(state[k], v) for k, v in pristine.items()):
                problem = problem or "modified the restorer's weights"
                model.load_state_dict(pristine)
                self._clean.clear()
        return problem

    def run(self, match: Match | dict[str, Any], given: dict[str, Any] | None = None) -> dict[str, Any]:
        """Evaluate one match; never raises for a plugin's fault, returns a failed outcome.
        ``given``: another match's result of the same attack computation, to score instead of
        attacking (arena/run/share.py)."""
        if isinstance(match, dict):
            match = Match(**match)
        started = time.time()
        t0 = time.perf_counter()
        with PeakMemory(self.device) as peak:
            outcome = self._run(match, given)
        outcome.timings["total"] = time.perf_counter() - t0
        outcome.peak_mem_mb = peak.mb
        return {"key": match.key, "device": self.device_name(), "node": ray_node(), **outcome.__dict__,
                "defense_ms_per_mp": self._clean_cost(match), "attack_ms_per_mp": self._attack_cost(outcome, given),
                "started_at": started, "finished_at": time.time()}

    def _run(self, match: Match, given: dict[str, Any] | None = None) -> Outcome:
        """The match in stages, each failure blamed on whoever owns the stage."""
        try:  # the system: building it, probing its declarations, its clean pass
            system = self.system(match)
            checks = self.probes(match, system)
            if checks.get("fault"):
                return Outcome("failed", reason=checks["fault"], blame="system", probes=checks)
            escalate = "a gradient-free attack beat every gradient attack on an image" if match.escalate else None
            if checks.get("violation") and checks.get("gradient_masked") and match.suite:
                escalate = checks["violation"]  # the standard suite attacks through BPDA instead
            elif checks.get("violation"):
                return Outcome("disqualified", reason=checks["violation"], blame="system", probes=checks)
            clean = self.clean(match, system)
        except Exception as exc:  # noqa: BLE001 - whatever the system raised fails its match
            return _failed("system", exc)
        problem = self.integrity()
        if problem:
            return Outcome("disqualified", reason=f"the system {problem}", blame="system", probes=checks)
        try:  # the attack's own set-up
            attack = self.registry.create("attack", match.attack.name, match.attack.params)
            attack.rounds()
        except Exception as exc:  # noqa: BLE001
            return _failed("attack", exc)
        try:
            outcome = evaluate(match, system, attack, self.data, clean, samples=self.samples,
                               surrogates=self.surrogate, watch=self.watch,
                               models={id(m): m for m in self._models.values()}, integrity=self.integrity,
                               rebuild=lambda: self.system(match), escalate=escalate,
                               eot_memo=self._eot.setdefault(self._clean_key(match)[:2], {}), given=given)
        except Exception as exc:  # noqa: BLE001 - the arena's own code failing: not a plugin's fault
            return _failed("infra", exc)
        outcome.probes = checks
        return outcome

    def _attack_cost(self, outcome: Outcome, given: dict[str, Any] | None) -> float | None:
        """The attack's milliseconds per megapixel of the match's images; for a batch another
        match computed, what computing it cost there (so sharing leaves every row's cost
        comparable)."""
        if (outcome.protocol or {}).get("computed_in"):
            return (given or {}).get("attack_ms_per_mp")
        seconds = outcome.timings.get("attack")
        if seconds is None or outcome.status != "done":
            return None
        n, _, h, w = self.data.lq.shape
        return 1000 * seconds / (n * h * w / 1e6)

    def _clean_cost(self, match: Match) -> float | None:
        c = self._clean.get(self._clean_key(match))
        return c[0].defense_ms_per_mp if c else None


def _failed(blame: str, exc: BaseException) -> Outcome:
    return Outcome("failed", reason=f"{type(exc).__name__}: {exc}", blame=blame,
                   error="".join(traceback.format_exception(exc)))


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def rescore_systems(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Re-score stored adversarial batches in this (fresh) process.

    ``job``: ``classes`` ({(role, name): class}, so in-process plugins travel too), ``data`` (a
    DataSpec dict), ``device``, and ``systems``: each with ``restorer`` and ``defense`` specs
    (plain dicts), ``weights`` (hardened file or None) and ``entries`` (key, seed, adv)."""
    from arena.data import load_data
    from arena.plan import DataSpec

    classes = job["classes"]
    device = default_device(job.get("device"))
    spec = DataSpec(**job["data"])
    data = load_data(spec.name, spec.split, root=spec.root, images=spec.images, size=spec.size, seed=spec.seed)

    def builder(s: dict[str, Any]):
        rcls = classes[("restorer", s["restorer"]["name"])]
        code = data.code.to(device) if rcls.needs_psf else None

        def build() -> System:  # everything new: weights from disk, links from their specs
            weights = s["weights"]
            if isinstance(weights, dict):  # built on another host (arena.run.harden.portable)
                weights = materialise(weights)
            model = rcls(rcls.validate(s["restorer"]["params"])).load(device, weights=weights)
            links = [classes[("defense", d["name"])](classes[("defense", d["name"])].validate(d["params"]))
                     for d in s["defense"]]
            return System(model, links, code)
        return build

    return rescore([(builder(s), s["entries"]) for s in job["systems"]], data, device)


def ray_node() -> str:
    """Where this worker runs, readable after the cluster is gone: the host name, and under Ray
    the node id's first 8 hex digits and the node's CPUs and GPUs, "gpu-3 (1f0c2a9e, 16 CPU, 2 GPU)"."""
    import socket

    host = socket.gethostname()
    if "ray" not in sys.modules:
        return host[:100]  # the column's width
    import ray

    if not ray.is_initialized():
        return host[:100]
    node_id = ray.get_runtime_context().get_node_id()
    node = next((n for n in ray.nodes() if n.get("NodeID") == node_id), {})
    res = node.get("Resources", {})
    counts = "".join(f", {res[k]:g} {k}" for k in ("CPU", "GPU") if res.get(k))
    detail = f" ({node_id[:8]}{counts})"
    return node.get("NodeManagerHostname", host)[:100 - len(detail)] + detail
