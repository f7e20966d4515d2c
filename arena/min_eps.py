"""Minimal ε per image (``arena min-eps``): the smallest radius at which an attack breaks each
image, found by bisection, and its median over images, a robustness number with no budget to
choose (ARES's robustness curves, Dong et al., CVPR 2020, for restoration).

An image is *broken* at ε when the attack, run at budget ε, drives the defended system's PSNR
on it below a floor: absolute (``floor`` dB) or relative to its clean PSNR (``drop`` dB below).
A random system is scored at its worst of ``arena.match.N_EVALUATIONS`` draws, so it cannot
look robust by the luck of one draw.

Every probe of (image, ε) is an ordinary match of the arena: ``arena.match.evaluate`` with a
strict ``Budget`` whose ``eps`` is that ε, a white-box ``Target`` over a ``Ledger``, the
worker's watch and integrity checks and ``verify`` on the result. The budget's ``eps`` is one
float for the whole batch (``Attack.project`` clamps to it, APGD sizes its first step from
it), so each bisection step runs one match per distinct ε, on the images whose bracket has
that midpoint: a step costs one attack of every image still searched, as one batch when their
brackets agree (at first) and in as many batches as there are distinct brackets later.
Rescaling one batch to per-row radii instead would need an oracle of its own and would shrink
the [0, 1] box of every image that touches it; this way each probe is exactly the match
``arena run`` would play at that budget.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from arena.api import ArenaError, ConfigError, describe_validation_error, fraction
from arena.data import UDCData, load_data
from arena.match import Clean, clean_pass, draw_scores, evaluate, evaluation_seeds
from arena.plan import DataSpec, Match, parse_config, plan
from arena.threat import System

#: The radius searched up to when none is given, per norm ([0, 1] image units).
DEFAULT_HI = {"linf": 32 / 255, "l2": 4.0}
#: The drop below clean PSNR that breaks an image when neither floor nor drop is given.
DEFAULT_DROP_DB = 3.0


class SearchSpec(BaseModel):
    """What ``arena min-eps`` searches: the system, the attack, the floor, the bracket."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    restorer: str
    defense: str = "none"
    attack: str = "apgd"
    attack_params: dict[str, Any] = Field(default_factory=dict)
    floor: float | None = Field(None, gt=0, le=100, description="absolute PSNR floor, dB")
    drop: float | None = Field(None, gt=0, le=100, description="floor = clean PSNR - drop, dB")
    norm: Literal["linf", "l2"] = "linf"
    lo: float = Field(0.0, ge=0, description="lower end of the bracket")
    hi: float | None = Field(None, gt=0, le=64, description="upper end (default per norm)")
    steps: int = Field(20, ge=1, le=10_000, description="attack iterations at every probe")
    bisections: int = Field(8, ge=1, le=30, description="halvings of each image's bracket")
    threat: Literal["oblivious", "adaptive"] = "adaptive"
    eot: int = Field(4, ge=1, le=1000, description="EOT draws per gradient (random, adaptive)")
    data: DataSpec = DataSpec()
    seed: int = 0

    @field_validator("lo", "hi", mode="before")
    @classmethod
    def _eps(cls, v):
        return fraction(v)

    @model_validator(mode="before")
    @classmethod
    def _default_drop(cls, raw):
        if isinstance(raw, dict) and raw.get("floor") is None and raw.get("drop") is None:
            return {**raw, "drop": DEFAULT_DROP_DB}
        return raw

    @model_validator(mode="after")
    def _consistent(self):
        if self.floor is not None and self.drop is not None:
            raise ValueError("give a floor (--floor) or a drop (--drop), not both")
        if self.lo >= self.upper:
            raise ValueError(f"lo ({self.lo:.4g}) must be below hi ({self.upper:.4g})")
        return self

    @property
    def upper(self) -> float:
        return DEFAULT_HI[self.norm] if self.hi is None else self.hi

    @property
    def rule(self) -> str:
        return f"PSNR < {self.floor:g} dB" if self.floor is not None else f"PSNR < clean - {self.drop:g} dB"

    def floors(self, clean_psnr: torch.Tensor) -> torch.Tensor:
        if self.floor is not None:
            return torch.full_like(clean_psnr, self.floor)
        return clean_psnr - self.drop


def search_spec(**raw: Any) -> SearchSpec:
    """A validated SearchSpec, or a one-line ConfigError naming the field and what is allowed."""
    try:
        return SearchSpec(**raw)
    except ValidationError as exc:
        whole = [e["msg"] for e in exc.errors() if not e["loc"]]  # the spec's own rule, not a field's
        if whole:
            raise ConfigError(f"min-eps: {whole[0].removeprefix('Value error, ')}") from None
        raise ConfigError(describe_validation_error("min-eps", exc)) from None


@dataclass
class ImageEps:
    """One image's bracket: broken at ``upper`` (inf: not even at hi), not at ``lower``."""

    image: str
    clean_psnr: float
    floor: float
    lower: float = 0.0
    upper: float = float("inf")
    #: every probe of this image: (ε, its score under the rule), in the order made
    probes: list[tuple[float, float]] = field(default_factory=list)

    @property
    def eps(self) -> float:
        return (self.lower + self.upper) / 2 if self.upper > 0 else 0.0

    @property
    def status(self) -> str:
        if self.upper == 0:
            return "clean under floor"
        return "broken" if self.upper < float("inf") else "not broken"


@dataclass
class Result:
    spec: SearchSpec
    images: list[ImageEps]
    random: bool
    draws: int
    matches: int = 0
    wall_s: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(i.eps for i in self.images)

    @property
    def median_bracket(self) -> tuple[float, float]:
        """Medians of the lower and upper ends: the true median lies between them."""
        return (statistics.median(i.lower for i in self.images),
                statistics.median(i.upper for i in self.images))


class Search:
    """The bisection over one defended system: each probe is a match of the arena."""

    def __init__(self, spec: SearchSpec, worker, match: Match, registry):
        self.spec, self.worker, self.match, self.registry = spec, worker, match, registry
        self.data: UDCData = worker.data
        self.matches = 0

    def system(self, rows: list[int]) -> System:
        """A freshly built system over the images ``rows`` (their PSF codes, if any)."""
        s = self.worker.system(self.match)
        code = None if s.code is None else s.code[torch.as_tensor(rows, device=s.code.device)]
        return System(s.model, s.links, code)

    def score(self, system: System, x: torch.Tensor, hq: torch.Tensor) -> list[float]:
        """Per image PSNR under the rule: a random system at its worst of N draws."""
        drawn = draw_scores(system, x, hq, self.match.seed, system.random)[1]
        return drawn["psnr_worst"] if system.random else drawn["psnr"]

    def attack(self, eps: float, rows: list[int], clean: Clean) -> list[float]:
        """Attack the images ``rows`` at radius ``eps`` in one match; their scores under the rule."""
        m = self.match.model_copy(update={"budget": self.match.budget.model_copy(update={"eps": eps})})
        ix = torch.as_tensor(rows, device=clean.out.device)
        sub = self.data.subset(rows)
        part = Clean(clean.out[ix], clean.psnr[ix], clean.ssim[ix], clean.defense_ms_per_mp, clean.time_s)
        system = self.system(rows)
        attack = self.registry.create("attack", m.attack.name, m.attack.params)
        outcome = evaluate(m, system, attack, sub, part, watch=self.worker.watch,
                           models={id(system.model): system.model}, integrity=self.worker.integrity,
                           rebuild=lambda: self.system(rows))
        self.matches += 1
        if outcome.status != "done":
            raise ArenaError(f"min-eps: {m.label()} on {len(rows)} image(s) {outcome.status} "
                             f"(blame: {outcome.blame}): {' '.join(str(outcome.reason).split())}")
        x = torch.from_numpy(outcome.adv).to(part.out.device)
        return self.score(self.system(rows), x, sub.hq.to(x.device))

    def run(self) -> Result:
        t0 = time.perf_counter()
        spec, data = self.spec, self.data
        system = self.system(list(range(len(data))))
        checks = self.worker.probes(self.match, system)
        problem = checks.get("fault") or checks.get("violation")
        if problem:
            raise ArenaError(f"min-eps: system {self.match.restorer.name} + {self.match.defense_label}: "
                             f"{problem}")
        device = self.worker.device
        lq, hq = data.lq.to(device), data.hq.to(device)
        clean = clean_pass(system, lq, hq, self.match.seed)
        floors = spec.floors(clean.psnr.cpu()).tolist()
        images = [ImageEps(data.ids[i], float(clean.psnr[i]), floors[i]) for i in range(len(data))]
        for img, s in zip(images, self.score(system, lq.clone(), hq)):
            img.probes.append((0.0, s))
            if s < img.floor:  # broken with no perturbation at all
                img.upper = 0.0
        self._probe(images, spec.upper, [i for i, img in enumerate(images) if img.upper > 0], clean)
        if spec.lo > 0:
            broken_at_hi = [i for i, img in enumerate(images) if img.upper == spec.upper]
            self._probe(images, spec.lo, broken_at_hi, clean)
        for _ in range(spec.bisections):
            groups: dict[float, list[int]] = {}  # one match per distinct midpoint
            for i, img in enumerate(images):
                if 0 < img.upper < float("inf"):
                    groups.setdefault(img.eps, []).append(i)
            for eps, rows in groups.items():
                self._probe(images, eps, rows, clean)
        draws = len(evaluation_seeds(self.match.seed, system.random))
        return Result(spec, images, system.random, draws, self.matches, time.perf_counter() - t0)

    def _probe(self, images: list[ImageEps], eps: float, rows: list[int], clean: Clean) -> None:
        """Narrow the bracket of each image of ``rows`` by one measurement at ``eps``."""
        if not rows:
            return
        for i, s in zip(rows, self.attack(eps, rows, clean)):
            images[i].probes.append((eps, s))
            if s < images[i].floor:
                images[i].upper = eps
            else:
                images[i].lower = eps


def prepare(spec: SearchSpec, device: str | None = None, registry=None,
            data: UDCData | None = None) -> Search:
    """Plan the system's one match at hi (every name and parameter checked as ``arena run``
    checks them), build its hardened weights if a link hardens, and warm a worker on the data
    (``data``, or the spec's split)."""
    from arena.plugins import load_registry
    from arena.run.executors import LocalExecutor
    from arena.run.harden import hardening_jobs
    from arena.run.worker import Worker

    registry = registry or load_registry()
    budget = {"norm": spec.norm, "eps": spec.upper, "steps": spec.steps}
    t = parse_config({"name": "min-eps", "seed": spec.seed, "restorers": [spec.restorer],
                      "defenses": [spec.defense], "attacks": [{"name": spec.attack, **spec.attack_params}],
                      "threat_models": [spec.threat], "eot_samples": spec.eot,
                      "data": spec.data.model_dump(), "budgets": [budget]}, where="min-eps")
    (match,) = plan(t, registry)
    if match.status == "skipped":
        raise ConfigError(f"min-eps: {match.reason}")
    if match.attack_kind != "white-box":
        allowed = ", ".join(sorted(n for n, e in registry.entries["attack"].items()
                                   if e.cls.kind == "white-box"))
        raise ConfigError(f"min-eps: attack '{spec.attack}' is {match.attack_kind}; the search needs a "
                          f"white-box attack ({allowed})")
    if data is None:
        d = spec.data
        data = load_data(d.name, d.split, root=d.root, images=d.images, size=d.size, seed=d.seed)
    hardened = LocalExecutor(None, device, registry).harden(hardening_jobs([match], registry))
    for why in hardened.failed.values():
        raise ArenaError(f"min-eps: {why['reason']}")
    return Search(spec, Worker(data, hardened, device=device, registry=registry), match, registry)


def min_eps(spec: SearchSpec, device: str | None = None, registry=None,
            data: UDCData | None = None) -> Result:
    """Per image, the bracket [lower, upper] on the smallest ε that breaks it; see the module."""
    return prepare(spec, device, registry, data).run()


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _eps_label(eps: float, hi: float, norm: str) -> str:
    if eps == float("inf"):
        return f"> {hi:.4g}"
    return f"{eps:.4g}" + (f" ({eps * 255:.3g}/255)" if norm == "linf" else "")


def describe(result: Result) -> str:
    """One line: the protocol the numbers were made under."""
    s = result.spec
    scoring = f"worst of {result.draws} draws" if result.random else "deterministic system"
    attack = s.attack + (f" {s.attack_params}" if s.attack_params else "")
    return (f"{s.restorer} + {s.defense}, {s.threat}, {s.norm}; attack {attack}, {s.steps} steps"
            f"{f', EOT {s.eot}' if result.random and s.threat == 'adaptive' else ''}; broken when "
            f"{s.rule} ({scoring}); eps in [{s.lo:.4g}, {s.upper:.4g}], {s.bisections} bisections")


def as_table(result: Result) -> str:
    from arena.store.queries import format_table

    s = result.spec
    rows = [{"image": i.image, "clean_psnr": round(i.clean_psnr, 2), "floor": round(i.floor, 2),
             "lower": f"{i.lower:.4g}", "upper": _eps_label(i.upper, s.upper, s.norm),
             "eps": _eps_label(i.eps, s.upper, s.norm), "status": i.status} for i in result.images]
    lo, up = result.median_bracket
    broken = sum(i.upper < float("inf") for i in result.images)
    return "\n".join([
        describe(result), "",
        format_table(rows, ["image", "clean_psnr", "floor", "lower", "upper", "eps", "status"]), "",
        f"median ε: {_eps_label(result.median, s.upper, s.norm)}, between {lo:.4g} and "
        f"{_eps_label(up, s.upper, s.norm)}; {broken} of {len(result.images)} images broken by "
        f"{s.upper:.4g}; {result.matches} matches in {result.wall_s:.1f} s"])


def as_json(result: Result) -> dict[str, Any]:
    """Plain data; ε that is not reached by hi is null (JSON has no infinity)."""
    finite = lambda v: None if v == float("inf") else v  # noqa: E731
    lo, up = result.median_bracket
    return {"protocol": describe(result), "spec": result.spec.model_dump(mode="json"),
            "hi": result.spec.upper, "random": result.random, "draws": result.draws,
            "median_eps": finite(result.median), "median_lower": lo, "median_upper": finite(up),
            "matches": result.matches, "wall_s": result.wall_s,
            "images": [{"image": i.image, "clean_psnr": i.clean_psnr, "floor": i.floor, "lower": i.lower,
                        "upper": finite(i.upper), "eps": finite(i.eps), "status": i.status,
                        "probes": [[e, s] for e, s in i.probes]} for i in result.images]}


__all__ = ["DEFAULT_HI", "ImageEps", "Result", "Search", "SearchSpec", "as_json", "as_table",
           "min_eps", "prepare", "search_spec"]
