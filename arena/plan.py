"""Tournament config -> list of matches with stable keys; capability pruning.

A match is plain data (component names and validated parameters), hashed to a stable key, so
that workers rebuild components by name and a rerun recognises what is already stored.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from arena.api import ConfigError, describe_validation_error
from arena.plugins import Registry
from arena.threat import Budget, check_threat, is_scene

#: Datasets known to come without PSFs (real captured pairs).
DATASETS_WITHOUT_PSF = {"poled", "toled"}
#: Datasets (and splits) that keep the HDR scenes the scene threat model perturbs.
DATASETS_WITH_SCENES = {"embedded": ("test",)}


def _threat(v):
    return check_threat(v)


class Spec(BaseModel):
    """A component by name with its validated parameters, as plain data."""

    model_config = ConfigDict(frozen=True)
    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    def label(self) -> str:
        return self.name


class DataSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "embedded"
    #: "val": the embedded benchmark's held-out photographs, for choosing settings (never test)
    split: Literal["train", "val", "test"] = "test"
    root: str | None = None
    images: int | None = Field(8, ge=1, le=100_000)
    size: int = Field(32, ge=8, le=4096)
    seed: int = 0

    @field_validator("name")
    @classmethod
    def _known(cls, v):
        from arena.data import DATASETS  # imported when used: importing arena.plan stays light

        if v not in DATASETS:
            raise ValueError(f"must be one of {', '.join(DATASETS)}")
        return v

    @model_validator(mode="after")
    def _val_is_embedded(self):
        if self.split == "val" and self.name != "embedded":
            raise ValueError(f"split 'val' exists only for the embedded dataset, not '{self.name}' "
                             "(use train or test)")
        return self


class Tournament(BaseModel):
    """The validated tournament config (TOML)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "tournament"
    seed: int = 0
    seeds: list[int] = Field(default_factory=list, description="several match seeds (random defenses: "
                             "mean ± std over them); default [seed]")
    threat_models: list[str] = Field(["oblivious"], description="oblivious, adaptive, scene or "
                                     "scene-patch-N (README: the scene threat model)")
    eot_samples: int = Field(4, ge=1, le=1000, description="EOT draws for random defenses (adaptive)")
    data: DataSpec = DataSpec()
    restorers: list[Any]
    defenses: list[Any] = ["none"]
    attacks: list[Any]
    budgets: list[Budget] = [Budget()]
    num_gpus: float = Field(0, ge=0, le=64, description="GPUs per match task; fractions allowed")
    num_cpus: float = Field(1, gt=0, le=256, description="CPUs per worker")
    workers: int | None = Field(None, ge=1, le=4096, description="parallel workers (default: as resources allow)")
    timeout_s: float = Field(1800, gt=0, description="per-match timeout")
    max_retries: int = Field(1, ge=0, le=10, description="retries of a match whose worker died")
    samples_per_match: int = Field(2, ge=0, le=1000, description="images saved per match for the gallery")

    @field_validator("threat_models")
    @classmethod
    def _threats(cls, v):
        return [_threat(t) for t in v]

    @field_validator("restorers", "defenses", "attacks")
    @classmethod
    def _non_empty(cls, v):
        if not v:
            raise ValueError("must list at least one component")
        return v


class Match(BaseModel):
    model_config = ConfigDict(frozen=True)
    restorer: Spec
    defense: tuple[Spec, ...]
    attack: Spec
    attack_kind: str
    budget: Budget
    threat: str
    eot: int
    data: DataSpec
    seed: int
    #: "role:name" -> "package version fingerprint" of every component (results follow code)
    versions: dict[str, str] = Field(default_factory=dict)
    #: the attack suite (name-version) this match belongs to, or None for a listed attack
    suite: str | None = None
    #: the random links' randomness frozen to the match seed during the attack and its scoring
    #: (the standard suite's fixed-randomness score); part of the key only when set
    frozen: bool = False
    #: rerun through BPDA (identity backward) because a gradient-free attack beat every
    #: gradient attack on an image (the standard suite's escalation); in the key only when set
    escalate: bool = False
    status: Literal["planned", "skipped"] = "planned"
    reason: str | None = None

    @field_validator("threat")
    @classmethod
    def _threat(cls, v):
        return _threat(v)

    @property
    def defense_label(self) -> str:
        return ">".join(s.name for s in self.defense)

    @property
    def key(self) -> str:
        unset = {k for k in ("frozen", "escalate") if not getattr(self, k)}
        ident = self.model_dump(mode="json", exclude={"status", "reason", "attack_kind"} | unset)
        blob = json.dumps(ident, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def label(self) -> str:
        from arena.display import attack_variant

        return (f"{self.restorer.name} | {self.defense_label} | "
                f"{attack_variant(self.attack.name, self.frozen, self.escalate)} | {self.threat} {self.budget.label()}")


def read_config(path: str | Path) -> Tournament:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(raw, where=str(path))


def parse_config(raw: dict[str, Any], where: str = "config") -> Tournament:
    try:
        return Tournament(**raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(where, exc)) from None


def _as_dict(item: Any, role: str) -> dict[str, Any]:
    if isinstance(item, str):
        return {"name": item}
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return dict(item)
    raise ConfigError(f"each {role} entry must be a name or a table with a 'name' (got {item!r})")


def _spec(registry: Registry, role: str, raw: dict[str, Any]) -> Spec:
    name, params = raw["name"], {k: v for k, v in raw.items() if k != "name"}
    entry = registry.get(role, name, allow_unavailable=True)  # planned as skipped, with the reason
    validated = entry.cls.validate(params)
    return Spec(name=name, params=validated.model_dump(mode="json"))


def _chain(registry: Registry, raw: dict[str, Any]) -> tuple[Spec, ...]:
    names = [n.strip() for n in raw["name"].split(">")]
    if len(names) == 1:
        return (_spec(registry, "defense", raw),)
    extra = set(raw) - {"name"} - set(names)
    if extra:
        raise ConfigError(
            f"defense chain '{raw['name']}': unknown key(s) {sorted(extra)}; parameters of a chain "
            f"go in tables named after its links ({', '.join(names)})"
        )
    links = tuple(_spec(registry, "defense", {"name": n, **raw.get(n, {})}) for n in names)
    hardening = [s.name for s in links if registry.get("defense", s.name, allow_unavailable=True).cls.hardens]
    if len(hardening) > 1:
        raise ConfigError(f"defense chain '{raw['name']}' has more than one hardening link "
                          f"({', '.join(hardening)}): a chain may change the weights only once")
    return links


def _surrogate(registry: Registry, attack: Spec) -> tuple[Spec, ...]:
    """A transfer attack's surrogate restorer (``surrogate`` in its parameters), checked now:
    the worker would otherwise meet an unknown name only in the middle of every match."""
    name = attack.params.get("surrogate")
    if not isinstance(name, str):
        return ()
    if name not in registry.entries["restorer"] and not registry.broken:
        allowed = ", ".join(sorted(registry.entries["restorer"])) or "none registered"
        raise ConfigError(f"attack '{attack.name}': surrogate '{name}' is not a registered restorer "
                          f"(registered: {allowed})")
    entry = registry.get("restorer", name, allow_unavailable=True)  # a broken plugin's: skipped
    params = entry.cls.validate(attack.params.get("surrogate_params") or {})
    return (Spec(name=name, params=params.model_dump(mode="json")),)


def _attacks(registry: Registry, t: Tournament, restorer: Spec) -> list[tuple[Spec, dict[str, int], str | None, bool]]:
    """The attacks a restorer faces: those listed, then each named suite's, as
    (spec, budget overrides, suite label, frozen variant wanted)."""
    from arena.suite import SUITES

    out = []
    for raw in t.attacks:
        item = _as_dict(raw, "attack")
        suite = SUITES.get(item["name"]) if item["name"] not in registry.entries["attack"] else None
        if suite is None:
            out.append((_spec(registry, "attack", item), {}, None, False))
            continue
        if len(item) > 1:
            raise ConfigError(f"suite '{suite.name}' takes no parameters: its attacks, iterations and "
                              f"queries are fixed (version {suite.version})")
        out += [(_spec(registry, "attack", entry), overrides, suite.label, frozen)
                for entry, overrides, frozen in suite.for_restorer(restorer.name)]
    return out


def plan(t: Tournament, registry: Registry) -> list[Match]:
    """Every threat × budget × restorer × defense × attack match, pruned by capability."""
    from arena.suite import EOT_BY_RULE

    restorers = [_spec(registry, "restorer", _as_dict(r, "restorer")) for r in t.restorers]
    defenses = [_chain(registry, _as_dict(d, "defense")) for d in t.defenses]
    attacks = {r.model_dump_json(): _attacks(registry, t, r) for r in restorers}
    surrogates = {a.model_dump_json(): _surrogate(registry, a) for faced in attacks.values() for a, *_ in faced}
    names = [s.model_dump_json() for s in restorers]
    if len(set(names)) != len(names):
        raise ConfigError("the config lists the same restorer twice with the same parameters")
    for faced in attacks.values():
        listed = [(a.model_dump_json(), suite) for a, _, suite, _ in faced]
        if len(set(listed)) != len(listed):
            raise ConfigError("the config lists the same attack twice with the same parameters")
    has_psf = t.data.name not in DATASETS_WITHOUT_PSF
    matches = []
    for threat, budget, r, d, seed in itertools.product(
        t.threat_models, t.budgets, restorers, defenses, t.seeds or [t.seed]
    ):
        random = any(registry.get("defense", x.name, allow_unavailable=True).cls.random for x in d)
        for a, overrides, suite, frozen in attacks[r.model_dump_json()]:
            reason = next((f"{role} '{s.name}' is unavailable: {e.unavailable}"
                           for role, s in (("restorer", r), ("attack", a), *(("defense", x) for x in d),
                                           *(("restorer", x) for x in surrogates[a.model_dump_json()]))
                           for e in [registry.get(role, s.name, allow_unavailable=True)] if e.unavailable), None)
            if reason is None and registry.get("restorer", r.name).cls.needs_psf and not has_psf:
                reason = f"restorer '{r.name}' needs a PSF and dataset '{t.data.name}' has none"
            if reason is None and is_scene(threat):
                reason = _no_scenes(t.data)
            variants = [False, True] if (frozen and random and threat == "adaptive") else [False]
            matches += [
                Match(
                    restorer=r, defense=d, attack=a,
                    attack_kind=registry.get("attack", a.name, allow_unavailable=True).cls.kind,
                    budget=budget.model_copy(update=overrides) if overrides else budget,
                    threat=threat, eot=EOT_BY_RULE if suite else t.eot_samples, data=t.data, seed=seed,
                    versions=versions(registry, r, d, a), suite=suite, frozen=fixed,
                    status="skipped" if reason else "planned", reason=reason,
                )
                for fixed in variants
            ]
    return matches


def _no_scenes(data: DataSpec) -> str | None:
    """Why a scene match cannot run on ``data``, or None."""
    if data.split in DATASETS_WITH_SCENES.get(data.name, ()):
        return None
    kept = ", ".join(f"{n} ({'/'.join(s)})" for n, s in DATASETS_WITH_SCENES.items())
    return (f"the scene threat model needs HDR scenes and PSFs; dataset '{data.name}' split "
            f"'{data.split}' has none (kept by: {kept})")


def versions(registry: Registry, restorer: Spec, defense: tuple[Spec, ...], attack: Spec) -> dict[str, str]:
    """Package, version and code fingerprint of each component of a match (and of a transfer
    attack's surrogate restorer)."""
    from arena.fingerprint import fingerprint

    parts = [("restorer", restorer), ("attack", attack), *(("defense", s) for s in defense)]
    surrogate = attack.params.get("surrogate")
    if isinstance(surrogate, str) and surrogate in registry.entries["restorer"]:
        parts.append(("restorer", Spec(name=surrogate)))
    out = {}
    for role, spec in parts:
        e = registry.get(role, spec.name, allow_unavailable=True)
        out[f"{role}:{spec.name}"] = f"{e.package} {e.version} {fingerprint(e.cls)}".strip()
    return out


def config_hash(t: Tournament) -> str:
    blob = json.dumps(t.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


