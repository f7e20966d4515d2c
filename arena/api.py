"""Component base classes and the tensor contract.

Images are float32 tensors ``(N, 3, H, W)`` in [0, 1], in the tone-mapped domain the restorer
sees. Perturbations live in that same domain, so ``eps = 8/255`` means what it means in every
robustness paper. A component is a class with a stable lowercase ``name`` (its key in the
database), a one-line docstring naming its source paper and a nested pydantic ``Params`` model
validated when a tournament is planned.

The base classes carry the plumbing (device, eval mode, clamping, projection, seeding); plugins
carry the maths.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from arena.errors import ArenaError  # defined torch-free, so the store's errors derive from it too

if TYPE_CHECKING:  # pragma: no cover
    from arena.data import UDCData


class ConfigError(ArenaError, ValueError):
    """A one-line, user-facing configuration error."""


class RuleViolation(Exception):
    """A component broke one of the arena's rules: its match is disqualified, never scored.

    Raised by the arena (the target an attack holds, the worker's checks), never to be raised or
    caught by plugins: the arena remembers the first violation even if an attack swallows it.
    """


class SystemFault(Exception):
    """The defended system (the restorer or a defense link) raised or returned non-finite
    values while the arena or an attack used it: the match fails and counts against the system."""


class Params(BaseModel):
    """Base of every component's parameters: unknown fields are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------
# Budget and Target: what an attack may spend, and the oracle it spends it on
# --------------------------------------------------------------------------------------------

#: Most runs of ``budget.steps`` iterations an attack may declare (``Attack.rounds``).
MAX_ROUNDS = 100

#: Largest ε per norm. L∞: 1 is the whole [0, 1] range, so more is a typo ("300/255"). L2: a
#: fixed generous bound, the diameter of a 3x37x37 image (practical L2 budgets are below 10); the
#: image size is not known to a Budget, and beyond an image's diameter the ball is only larger.
MAX_EPS = {"linf": 1.0, "l2": 64.0}


def fraction(v: Any) -> Any:
    """A radius as a config writes it: "8/255" reads better than 0.03137. Other values pass."""
    if isinstance(v, str):
        try:
            return float(Fraction(v.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            raise ValueError("must be a number or a fraction like '8/255'") from None
    return v


class Budget(Params):
    """What an attack may spend: norm ball, iterations and model queries."""

    norm: Literal["linf", "l2"] = "linf"
    eps: float = Field(8 / 255, gt=0, le=MAX_EPS["l2"], description="radius, in [0,1] image units "
                       "(linf: at most 1, l2: at most 64)")
    steps: int = Field(10, ge=1, le=100_000, description="iterations of iterative attacks")
    queries: int = Field(1000, ge=1, le=10_000_000, description="query limit per image")

    @field_validator("eps", mode="before")
    @classmethod
    def _fraction(cls, v):
        try:
            return fraction(v)
        except ValueError as exc:
            raise ValueError(f"eps {exc}") from None

    @field_validator("eps")
    @classmethod
    def _in_range(cls, v, info):
        norm = info.data.get("norm", "linf")
        if v > MAX_EPS[norm]:
            raise PydanticCustomError("eps_range", f"must be at most {MAX_EPS[norm]:g} for norm {norm}")
        return v

    def label(self) -> str:
        return f"{self.norm} eps={self.eps:.4g}"

    def evaluation_limit(self, images: int, rounds: int, eot: int) -> int:
        """The most images a gradient-using attack may pass through its target's ``forward``:
        ``images x (steps + 2) x rounds x eot`` (each EOT draw is one evaluation; the two extra
        per round pay for a start point and a final ranking of the last iterate)."""
        return images * (self.steps + 2) * rounds * eot


class Target(Protocol):
    """What an attack receives: an oracle over the defended system, never the system itself.

    Which members exist depends on the attack's declared ``kind``; using one that the kind does
    not allow (a score-based attack calling ``forward``) disqualifies the match.

    Every kind:
      - ``query(x, hq=None, index=None)``: per-row loss of the *full* defended system. Each row
        is one query of the image it belongs to: ``x`` has one row per image of the match, or
        ``index`` (a LongTensor, one entry per row) names each row's image. The reference is the
        arena's own (``hq`` is accepted for compatibility and ignored). Past ``budget.queries``
        per image the match is disqualified.
      - ``queries_left()``: queries the most-queried image still has.
      - ``record(loss)``: append a per-image loss (or its mean) to the convergence record.
      - ``threat``, ``objective``, ``eot`` (draws per gradient; 1 unless the system is random
        and the threat model adaptive), ``device``.
    ``white-box`` adds:
      - ``forward(x)``: the differentiable output (adaptive: through the defense's declared
        gradient rules; oblivious: the undefended restorer). Each row and EOT draw is one
        evaluation; at most ``Budget.evaluation_limit(images, attack.rounds(), eot)``.
      - ``loss(x, hq=None)``, ``loss_grad(x, hq=None, steer=None)``: per-image objective (and its
        gradient, averaged over ``eot`` draws). ``steer(out, ref) -> (rank, drive)`` lets an
        attack climb another loss (``drive``) while ranking iterates by ``rank``.
      - ``mean_loss(x)``: the objective without gradient, averaged over ``eot`` draws.
      - ``reference()``: what the objective compares with (ground truth, or the clean output
        for ``mse_clean``); ``clean_out``: the clean output the arena computed.
    ``transfer`` adds ``surrogate(name, params=None)``: a white-box Target (oblivious) over an
    undefended restorer of the zoo, with the same evaluation bound.
    """

    threat: str
    objective: str
    eot: int
    device: torch.device

    def query(self, x: torch.Tensor, hq: torch.Tensor | None = None,
              index: torch.Tensor | None = None) -> torch.Tensor: ...

    def queries_left(self) -> int: ...

    def record(self, loss: torch.Tensor | float) -> None: ...

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def loss(self, x: torch.Tensor, hq: torch.Tensor | None = None) -> torch.Tensor: ...

    def loss_grad(self, x: torch.Tensor, hq: torch.Tensor | None = None,
                  steer: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...

    def mean_loss(self, x: torch.Tensor, hq: torch.Tensor | None = None) -> torch.Tensor: ...

    def reference(self, hq: torch.Tensor | None = None) -> torch.Tensor: ...

    def surrogate(self, name: str, params: dict[str, Any] | None = None) -> Target: ...


def describe_validation_error(where: str, exc: ValidationError) -> str:
    """Turn a pydantic error into one line naming the component, the field and what is allowed."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(params)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown parameter '{field}'")
        else:
            parts.append(f"'{field}' {err['msg'].lower()} (got {err.get('input')!r})")
    return f"{where}: " + "; ".join(parts)


class Component:
    """Shared machinery: a name, validated parameters, a one-line description."""

    name: ClassVar[str]
    kind: ClassVar[str]
    Params: ClassVar[type[Params]] = Params

    def __init__(self, params: Params | dict[str, Any] | None = None):
        if not isinstance(params, Params):
            params = self.validate(params or {})
        self.params = params

    @classmethod
    def validate(cls, raw: dict[str, Any]) -> Params:
        """Validate raw parameters, raising a ConfigError that names component and field."""
        try:
            return cls.Params(**raw)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(f"{cls.role()} '{cls.name}'", exc)) from None

    @classmethod
    def role(cls) -> str:
        for base in (Restorer, Attack, Defense):
            if issubclass(cls, base):
                return base.__name__.lower()
        return "component"

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    @classmethod
    def param_table(cls) -> dict[str, Any]:
        """Field name -> default (or 'required'), for listings."""
        from pydantic_core import to_jsonable_python

        return {
            k: ("required" if f.is_required() else to_jsonable_python(f.get_default(call_default_factory=True)))
            for k, f in cls.Params.model_fields.items()
        }


# --------------------------------------------------------------------------------------------
# Restorer
# --------------------------------------------------------------------------------------------


class Restorer(Component):
    """Builds an ``nn.Module`` mapping ``lq`` (and a PSF kernel code if ``needs_psf``) to output.

    The module's forward is ``forward(lq)`` or, for ``needs_psf`` restorers,
    ``forward(lq, code)`` with ``code`` of shape ``(N, C)``.
    """

    kind: ClassVar[str] = "restorer"
    needs_psf: ClassVar[bool] = False
    #: Default weights: a safetensors file with a JSON manifest beside it, or None (no weights).
    weights: ClassVar[str | Path | None] = None
    #: Run in channels-last memory format: set by architectures measured faster that way
    #: (benchmarks/bench_restorers.py); others lose speed, so it is opt-in.
    channels_last: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not {"weights", "tile", "overlap"} & set(cls.Params.model_fields):
            cls.Params = with_common(cls.Params)

    def build(self) -> torch.nn.Module:
        raise NotImplementedError

    def adapt_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A checkpoint's state dict in the architecture's published key layout, renamed to this
        module's (``arena weights import``). Default: unchanged."""
        return state

    def enter_state(self, state: dict[str, torch.Tensor], where: str) -> tuple[torch.nn.Module, dict, str]:
        """A checkpoint's state dict as (module it loads into strictly, tensors to store,
        architecture name), for ``arena weights import``. Default: ``adapt_state``, then
        ``build()``; a mismatch is one ``WeightsError`` line."""
        from arena.weights import load_strict

        model = load_strict(self.build(), self.adapt_state(state), where)
        return model, model.state_dict(), type(model).__name__

    def weights_file(self) -> str | Path | None:
        """The weights this instance loads: its ``weights`` parameter, else the class default."""
        return getattr(self.params, "weights", None) or self.weights

    def load(self, device: str | torch.device = "cpu", weights: str | Path | None = None):
        """Build the module, load its weights (safetensors only), put it in eval mode on device."""
        from arena.weights import load_weights

        model = self.build()
        path = weights if weights is not None else self.weights_file()
        if path is not None:
            load_weights(model, path)
        return self.ready(model, device)

    def ready(self, model: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
        """A loaded module in eval mode on device, tiling full-resolution inputs (arena.tiling)."""
        from arena.tiling import enable

        model.eval().requires_grad_(False)
        model = model.to(device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
            model.arena_channels_last = True  # System.restore feeds it channels-last inputs
        return enable(model, getattr(self.params, "tile", 0), getattr(self.params, "overlap", 32))


def _weights_file(v: str | None) -> str | None:
    if v is None:
        return None
    path = Path(v).expanduser().resolve()
    if path.suffix != ".safetensors":
        raise ValueError("must be a .safetensors file with its manifest (convert a checkpoint with "
                         "`arena weights import`)")
    if not path.exists():
        raise ValueError(f"no such file {path}")
    return str(path)


def with_common(params: type[Params]) -> type[Params]:
    """``params`` plus what every restorer takes: ``weights``, a safetensors file (made by
    ``arena weights import``) replacing the class's default weights, and ``tile``/``overlap``
    for full-resolution images (arena.tiling). Each is left out of the dump while at its
    default, so every match key planned before these existed stays the same."""
    from typing import Annotated

    from pydantic import AfterValidator, create_model

    weights = Field(None, exclude_if=lambda v: v is None,
                    description="safetensors weights replacing the default (arena weights import)")
    tile = Field(None, ge=0, le=16384, exclude_if=lambda v: v is None,
                 description="tile side in pixels for large images (0: never tile; unset: tile "
                 "when the forward would pass the memory budget ARENA_TILE_MEMORY_MB)")
    overlap = Field(32, ge=0, le=1024, exclude_if=lambda v: v == 32,
                    description="pixels neighbouring tiles share and blend")
    return create_model(params.__name__, __base__=params, __module__=params.__module__,
                        weights=(Annotated[str | None, AfterValidator(_weights_file)], weights),
                        tile=(int | None, tile), overlap=(int, overlap))


def run_restorer(model: torch.nn.Module, lq: torch.Tensor, code: torch.Tensor | None,
                 needs_psf: bool) -> torch.Tensor:
    """A restorer module's output on ``lq``: ``model(lq, code)`` for a restorer that
    ``needs_psf`` (``code`` moved to ``lq``'s device), ``model(lq)`` otherwise."""
    return model(lq, code.to(lq.device)) if needs_psf else model(lq)


# --------------------------------------------------------------------------------------------
# Attack
# --------------------------------------------------------------------------------------------

AttackKind = Literal["white-box", "score-based", "decision-free", "transfer"]
Objective = Literal["mse", "mse_clean", "l1", "ssim"]


class AttackParams(Params):
    objective: Objective = Field(
        "mse",
        description="what the attack maximises: mse to ground truth, mse to the clean output, "
        "l1 to ground truth, or 1 - ssim to ground truth",
    )


class Attack(Component):
    """An attack: ``perturb(target, lq, hq, budget, generator) -> lq_adv``.

    Subclasses implement ``perturb`` with the helpers below; ``run`` does the plumbing. The arena
    verifies the returned batch itself, so nothing here silently clips a result into compliance
    after ``perturb`` returns: ``project`` is for the attack's own iterations.
    """

    kind: ClassVar[AttackKind] = "white-box"
    #: A minimum-norm attack (C&W) seeks the smallest perturbation that does enough damage,
    #: so it is not expected to out-damage a maximum-loss attack at the same budget.
    minimum_norm: ClassVar[bool] = False
    Params: ClassVar[type[Params]] = AttackParams

    def perturb(
        self,
        target: Target,
        lq: torch.Tensor,
        hq: torch.Tensor,
        budget: Budget,
        generator: torch.Generator,
    ) -> torch.Tensor:
        raise NotImplementedError

    def run(self, target: Target, lq, hq, budget: Budget, generator: torch.Generator):
        # copies: whatever perturb does to its inputs never reaches the caller's tensors
        lq = lq.detach().to(target.device).clone()
        hq = hq.detach().to(target.device).clone()
        with torch.enable_grad():
            x_adv = self.perturb(target, lq, hq, budget, generator)
        return x_adv.detach()

    def rounds(self) -> int:
        """Runs of ``budget.steps`` iterations this attack makes (its ``restarts`` parameter, if
        it has one): the factor in its evaluation bound, at most ``MAX_ROUNDS``."""
        return int(getattr(self.params, "restarts", 1))

    # -- helpers for subclasses ---------------------------------------------------------------

    @staticmethod
    def project(x_adv: torch.Tensor, x: torch.Tensor, budget: Budget) -> torch.Tensor:
        """Project onto the budget's ball around x, then onto the image range [0, 1]."""
        delta = x_adv - x
        if budget.norm == "linf":
            delta = delta.clamp(-budget.eps, budget.eps)
        else:
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            factor = (budget.eps / norms).clamp(max=1.0)
            delta = delta * factor.view(-1, 1, 1, 1)
        return (x + delta).clamp(0.0, 1.0)

    @staticmethod
    def ascend(x: torch.Tensor, grad: torch.Tensor, step: float, budget: Budget) -> torch.Tensor:
        """One steepest-ascent step of size ``step`` under the budget's norm."""
        if budget.norm == "linf":
            return x + step * grad.sign()
        norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return x + step * grad / norms

    @staticmethod
    def random_start(x: torch.Tensor, budget: Budget, generator: torch.Generator) -> torch.Tensor:
        """A uniform draw from the budget's ball (L2: uniform in volume), inside [0, 1]."""
        u = torch.rand(x.shape, generator=generator, device=generator.device).to(x.device)
        if budget.norm == "linf":
            delta = (2 * u - 1) * budget.eps
        else:
            g = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
            g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            d = x[0].numel()
            r = u.flatten(1)[:, :1].pow(1.0 / d).view(-1, 1, 1, 1)
            delta = g * r * budget.eps
        return (x + delta).clamp(0.0, 1.0)

    @staticmethod
    def keep_best(best_x, best_loss, x, loss):
        """Per image, keep the iterate with the highest loss."""
        better = loss > best_loss
        best_x = torch.where(better.view(-1, 1, 1, 1), x, best_x)
        return best_x, torch.maximum(loss, best_loss)


# --------------------------------------------------------------------------------------------
# Defense
# --------------------------------------------------------------------------------------------

GradientRule = Literal["exact", "bpda"]


class Defense(Component):
    """A defense: an input transform (``purify``), a weight change (``harden``), or both.

    ``gradient`` declares how an adaptive attacker differentiates ``purify``: ``exact`` (it is
    differentiable) or ``bpda`` (the backward pass uses ``approx``, identity by default).
    ``random`` declares that repeated calls differ, so adaptive attacks use EOT over draws.
    ``hardens`` declares that ``harden`` returns new restorer weights (built once per
    restorer, defense and data, and cached by content hash).
    """

    kind: ClassVar[str] = "defense"
    gradient: ClassVar[GradientRule] = "exact"
    random: ClassVar[bool] = False
    hardens: ClassVar[bool] = False

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable stand-in for ``purify`` on the backward pass (BPDA)."""
        return x

    def gradient_rule(self) -> str:
        """The rule this instance's backward pass follows: ``exact``, ``bpda``, or a plugin's
        own name for an approximation (``surrogate``). Anything but ``exact`` makes an adaptive
        attack through it a lower bound, and its rows say so. Default: ``gradient``."""
        return self.gradient

    def exact(self) -> "Defense":
        """This defense with the most exact gradient it offers (the same forward values): what
        the standard suite attacks. Default: itself."""
        return self

    def harden(
        self, restorer: Restorer, model: torch.nn.Module, data: UDCData, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Return the hardened restorer's state dict. Only called when ``hardens`` is True."""
        raise NotImplementedError

    @property
    def transforms_input(self) -> bool:
        return type(self).purify is not Defense.purify


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


__all__ = [
    "ArenaError",
    "Attack",
    "AttackKind",
    "AttackParams",
    "Budget",
    "Component",
    "ConfigError",
    "Defense",
    "Field",
    "Objective",
    "Params",
    "Restorer",
    "RuleViolation",
    "SystemFault",
    "Target",
    "run_restorer",
]
