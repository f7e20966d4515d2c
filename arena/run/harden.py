"""Hardening: the chain link that changes a restorer's weights, the jobs that build them (once
per restorer, defense, data and seed, cached by content), and what a match gets when its job
raised or timed out: it fails, blamed on the system, and the rest of the tournament runs."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from arena import defaults
from arena.api import ConfigError
from arena.data import load_data
from arena.match import failed_result, generator
from arena.plan import DataSpec, Match, Spec
from arena.plugins import load_registry
from arena.weights import save_weights, sha256_file


class Hardened(dict):
    """Built weights files by hardened key (what workers look up); ``failed`` holds, by the
    same key, the ``reason`` and ``error`` (traceback) of each job that raised or timed out;
    ``blobs``, by the same key, the files' contents (:func:`portable`) where they were built
    on another host, so that a node without the file writes it to its own cache."""

    def __init__(self, weights: dict[str, str] | None = None, failed: dict[str, dict[str, str]] | None = None):
        super().__init__(weights or {})
        self.failed = dict(failed or {})
        self.blobs: dict[str, dict[str, Any]] = {}

    def local(self, key: str) -> str:
        """The weights file of ``key`` in this host's cache (copied there from ``blobs`` where it
        was built elsewhere: a path of another host means nothing here, even if it exists)."""
        blob = getattr(self, "blobs", {}).get(key)
        return materialise(blob) if blob is not None else self[key]


def hardening_link(match: Match, registry) -> Spec | None:
    """The chain's one hardening link, if any (a chain may change the weights only once)."""
    links = [s for s in match.defense if registry.get("defense", s.name).cls.hardens]
    if len(links) > 1:  # plan() refuses such a chain; a stored spec may still carry one
        raise ConfigError(f"defense chain '{match.defense_label}' has more than one hardening link")
    return links[0] if links else None


def hardened_key(restorer: Spec, link: Spec, match: Match, registry) -> str:
    """Content key of a hardened restorer: what it was built from (including the versions of
    the plugins that built it), not which match asked."""
    versions = [registry.get(role, s.name).version for role, s in (("restorer", restorer), ("defense", link))]
    base = registry.create("restorer", restorer.name, restorer.params).weights_file()
    versions.append(sha256_file(base) if base is not None and Path(base).exists() else None)
    blob = json.dumps({"restorer": restorer.model_dump(mode="json"), "defense": link.model_dump(mode="json"),
                       "versions": versions,
                       "data": match.data.model_dump(mode="json", exclude={"split", "images"}),
                       "seed": match.seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def hardening_jobs(todo: list[Match], registry) -> list[tuple]:
    """One ``(key, restorer, link, data, seed)`` job per distinct hardened restorer ``todo`` needs."""
    jobs = {}
    for m in todo:
        link = hardening_link(m, registry)
        if link is not None:
            key = hardened_key(m.restorer, link, m, registry)
            jobs[key] = (key, m.restorer, link, m.data, m.seed)
    return list(jobs.values())


def job_failed(job: tuple, why: str, error: str | None = None) -> dict[str, str]:
    """The entry of ``Hardened.failed`` for a job: ``why`` is "failed: Type: message" or
    "timed out after N s"."""
    reason = f"hardening by '{job[2].name}' {why}"
    return {"reason": reason, "error": error or reason}


def hardening_failure(match: Match, hardened: dict[str, str], registry) -> dict[str, Any] | None:
    """The failed result of ``match`` if the weights it needs could not be built, else None."""
    failed = getattr(hardened, "failed", None)
    link = hardening_link(match, registry) if failed else None
    why = failed.get(hardened_key(match.restorer, link, match, registry)) if link is not None else None
    if why is None:
        return None
    return dict(failed_result(match, why["reason"], error=why["error"]), blame="system")


def cache_dir() -> Path:
    return defaults.cache_dir("hardened")


def build_hardened(key: str, restorer: Spec, link: Spec, data: DataSpec, seed: int,
                   device: str | None = None, registry=None) -> str:
    """Run the defense's ``harden`` and store the weights; reuse them if already built."""
    path = cache_dir() / f"{link.name}-{restorer.name}-{key}.safetensors"
    if path.exists() and path.with_suffix(".json").exists():
        return str(path)
    registry = registry or load_registry()
    dev = defaults.default_device(device)
    r = registry.create("restorer", restorer.name, restorer.params)
    d = registry.create("defense", link.name, link.params)
    model = r.load(dev)
    train = load_data(data.name, "train", root=data.root, size=data.size, seed=data.seed)
    t0 = time.perf_counter()
    state = d.harden(r, model, train, generator(seed))
    manifest = {
        "restorer": restorer.model_dump(mode="json"), "defense": link.model_dump(mode="json"),
        "data_version": train.version, "data_hash": train.hash, "seed": seed,
        "base_weights": sha256_file(r.weights_file()) if r.weights_file() else None,
        "wall_time_s": time.perf_counter() - t0, "device": str(dev),
    }
    return str(save_weights(state, path, manifest))


def portable(path: str) -> dict[str, Any]:
    """A built weights file and its manifest as bytes, to travel through Ray's object store to
    hosts that do not share the cache folder."""
    p = Path(path)
    return {"name": p.name, "weights": p.read_bytes(), "manifest": p.with_suffix(".json").read_bytes(),
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}


def build_portable(key: str, restorer: Spec, link: Spec, data: DataSpec, seed: int) -> dict[str, Any]:
    """:func:`build_hardened` on whichever node Ray picks, returning the file's contents."""
    return portable(build_hardened(key, restorer, link, data, seed))


def materialise(blob: dict[str, Any]) -> str:
    """The path of a :func:`portable` file in this host's cache, written there (atomically) unless
    a file of the same content is there already. The name carries the hardened key (what the
    weights were built from); the bytes are checked against the builder's hash."""
    path = cache_dir() / blob["name"]
    if _MATERIALISED.get(str(path)) == blob["sha256"] and path.is_file():
        return str(path)
    if path.is_file() and path.with_suffix(".json").is_file() and sha256_file(path) == blob["sha256"]:
        _MATERIALISED[str(path)] = blob["sha256"]
        return str(path)
    if hashlib.sha256(blob["weights"]).hexdigest() != blob["sha256"]:
        raise ValueError(f"hardened weights {blob['name']} arrived corrupted (sha256 differs)")
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, data in ((path.with_suffix(".json"), blob["manifest"]), (path, blob["weights"])):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    _MATERIALISED[str(path)] = blob["sha256"]
    return str(path)


#: files this process has checked or written, by path: their hash (no re-hash per match)
_MATERIALISED: dict[str, str] = {}
