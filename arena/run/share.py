"""Compute each adversarial example once: matches that share an attack computation.

A white-box attack under the oblivious threat model differentiates the undefended restorer, so
its adversarial batch does not depend on the defense: the matches of one restorer (with the same
weights), attack, budget, seed and data against ``none``, ``jpeg`` or ``diffpure`` are one
computation, and so is an adaptive match against a system whose links are all the identity. The
driver runs one match per computation, then hands its stored batch and attack record to the
others, which verify and score it through their own systems exactly as if they had computed it.

The sharing is checked, not assumed: an attack that asked its target for anything that depends
on the defense (``query``, or the defended clean output) marks its result not shareable
(``Ledger.saw_system``), and the other matches then run their own attack.
"""

from __future__ import annotations

import hashlib
import json

from arena.plan import Match
from arena.run.harden import hardened_key, hardening_link
from arena.threat import is_scene


def computation_key(match: Match, registry) -> str | None:
    """The attack computation this match shares with others, or None if its attack depends on
    the defended system (adaptive through a transform, score-based, decision-free, transfer)."""
    if match.status != "planned" or match.attack_kind != "white-box" or is_scene(match.threat):
        return None  # a scene match's batch is a scene, rendered with noise: never shared
    identity = all(_is_identity(registry.get("defense", s.name, allow_unavailable=True).cls)
                   for s in match.defense)
    if match.threat != "oblivious" and not identity:
        return None
    link = hardening_link(match, registry)
    weights = hardened_key(match.restorer, link, match, registry) if link is not None else None
    versions = {k: v for k, v in match.versions.items() if not k.startswith("defense:")}
    blob = json.dumps({"restorer": match.restorer.model_dump(mode="json"), "weights": weights,
                       "attack": match.attack.model_dump(mode="json"), "budget": match.budget.model_dump(mode="json"),
                       "seed": match.seed, "data": match.data.model_dump(mode="json"), "suite": match.suite,
                       "frozen": match.frozen, "escalate": match.escalate, "versions": versions},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _is_identity(cls) -> bool:
    from arena.api import Defense

    return cls.purify is Defense.purify and not cls.random


def split(matches: list[Match], registry) -> tuple[list[Match], dict[str, str]]:
    """(the matches that compute, {key of a match that can reuse: key of the one computing})."""
    first: dict[str, str] = {}
    computing, reuse = [], {}
    for m in matches:
        c = computation_key(m, registry)
        if c is None or c not in first:
            computing.append(m)
            if c is not None:
                first[c] = m.key
        else:
            reuse[m.key] = first[c]
    return computing, reuse


def computations(matches: list[Match], registry) -> int:
    """How many attack computations the planned matches need."""
    computing, _ = split([m for m in matches if m.status == "planned"], registry)
    return len(computing)
