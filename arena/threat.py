"""Threat models: the defended system, and the oracles (``arena.api.Target``) attacks receive.

Under ``oblivious`` the attacker differentiates the undefended restorer and the defense is
applied only at evaluation (the study's setting). Under ``adaptive`` the attacker gets the whole
defended system: exact gradients where a link is differentiable, BPDA where it declares it, and
EOT over draws of random links. Score-based queries always go through the full defended system.
Under ``scene`` the attack perturbs the HDR scene in front of the camera, not the captured image:
its oracle renders each query through the image formation model with a fresh draw of sensor
noise (``SceneRender``) and then attacks the defended system as under ``adaptive``.

An attack never holds the system: it holds an oracle that exposes only what its kind allows,
counts every image it evaluates, and remembers the first rule broken even if the attack catches
the exception (``violation``) and the first fault of the system (``fault``).
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import random
import re

import torch

from arena.api import Budget, Defense, RuleViolation, SystemFault
from arena.metrics import ssim

ThreatModel = str  # one of THREAT_MODELS, or "scene-patch-N" (check_threat)
THREAT_MODELS: tuple[str, ...] = ("oblivious", "adaptive", "scene")
_PATCH = re.compile(r"scene-patch-([1-9][0-9]?)")

#: Relative and absolute slack when checking ||delta|| <= eps, for float rounding only.
NORM_RTOL = 1e-5
NORM_ATOL = 1e-6
#: Slack on the [0, 1] range of what an attack feeds its target (float rounding only).
RANGE_ATOL = 1e-6

__all__ = ["Budget", "Ledger", "SceneRender", "System", "Target", "QueryTarget", "TransferTarget",
           "check_threat", "is_scene", "make_target", "patch_area", "verify"]


def check_threat(name: str) -> str:
    """``name`` if it names a threat model, else ValueError saying which names exist."""
    if name in THREAT_MODELS or _PATCH.fullmatch(str(name)):
        return name
    raise ValueError(f"{name!r} is not a threat model; choose oblivious, adaptive, scene or "
                     "scene-patch-<percent> (a patch of 1-99% of the frame, e.g. scene-patch-10)")


def is_scene(threat: str) -> bool:
    return threat == "scene" or bool(_PATCH.fullmatch(threat))


def patch_area(threat: str) -> float | None:
    """The patch's share of the frame under ``scene-patch-N`` (N/100), else None."""
    m = _PATCH.fullmatch(threat)
    return int(m.group(1)) / 100 if m else None


def attacks_defense(threat: str) -> bool:
    """Whether the attacker's gradients go through the defense links (adaptive, scene)."""
    return threat == "adaptive" or is_scene(threat)


class SceneRender:
    """The arena's image formation for one scene match: what the attack perturbs and how the
    perturbed scene reaches the restorer.

    The attack perturbs light: its input is a pattern canvas (3, H+2m, W+2m) of 0.5 everywhere
    (``start``), covering the frame and the context m the PSF spreads into it, and a returned
    canvas u' adds the radiance u' − 0.5 to the HDR scene: x' = max(x + u' − 0.5, 0), in units
    of the sensor's saturation level. So ε is the L∞ (or L2) radius of the radiance added or
    removed, a fraction of what saturates a pixel (ε < 0.5: the canvas is clamped to [0, 1]).
    x' is rendered as φ(C(x' ∗ k + n)) with the sample's PSF; to first order the UDC input
    moves by φ'(C(x ∗ k))·C'·(k ∗ δ), up to 4δ in the dark and nothing where it saturates.
    Under ``scene-patch-N`` only a square of N% of the frame is the attacker's (a screen or a
    sticker), placed per image by the match seed: outside it the scene is the scene, whatever
    the attack returns (the budget is still checked on all of it).

    Noise: each oracle evaluation draws fresh Gaussian sensor noise of each sample's photon
    count and read noise from the arena's own generator (seeded by the match, held here, never
    the attack's nor the target's ``generator``), so the attack must survive it (EOT). The
    batch that is scored is rendered by the arena (``evaluate``) with the noise realisation the
    dataset formed lq with, which this object (the attack's oracle holds it) never sees: with
    u' = u the scored batch is lq itself.
    """

    #: the canvas value that adds no light
    REST = 0.5

    def __init__(self, scene: torch.Tensor, psf: torch.Tensor, photons: torch.Tensor,
                 read_noise: torch.Tensor, seed: int, patch: float | None = None,
                 margin: int | None = None):
        self.margin = psf.shape[-1] // 2 if margin is None else int(margin)  # context per side
        self._x0 = scene.detach().double().clone()
        self._psf = psf.detach().double().clone()
        self._photons = photons.detach().double().cpu().clone()
        self._read = read_noise.detach().double().cpu().clone()
        self.__draws = torch.Generator(device="cpu").manual_seed(int(seed) * 7 + 1_000_003)
        self.mask = self._patch_mask(patch, seed) if patch else None

    def _patch_mask(self, area: float, seed: int) -> torch.Tensor:
        n, _, s, _ = self._x0.shape
        h = s - 2 * self.margin
        side = max(1, round((area * h * h) ** 0.5))
        g = torch.Generator(device="cpu").manual_seed(int(seed) + 500_009)
        mask = torch.zeros(n, 1, s, s, dtype=torch.float64)
        for i in range(n):
            top, left = (self.margin + int(v) for v in torch.randint(0, h - side + 1, (2,), generator=g))
            mask[i, :, top:top + side, left:left + side] = 1.0
        return mask.to(self._x0.device)

    @property
    def canvas(self) -> torch.Size:
        """The shape of the canvas: the scene's, frame and context."""
        return self._x0.shape

    def start(self) -> torch.Tensor:
        """The canvas that adds no light, the attack's ``lq``."""
        return torch.full(self._x0.shape, self.REST, dtype=torch.float32, device=self._x0.device)

    def scene(self, u: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """The linear radiance of the scene under canvas u (float64, differentiable)."""
        rows = slice(None) if index is None else index.to(self._x0.device)
        d = u.double() - self.REST
        if self.mask is not None:
            d = d * self.mask[rows]
        return (self._x0[rows] + d).clamp_min(0.0)  # light can be taken away, down to none

    def __call__(self, u: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """The UDC input the restorer receives, under a fresh noise draw (oracle calls)."""
        from arena.data.formation import torch_convolve, torch_noise, torch_render

        rows = slice(None) if index is None else index.cpu()
        x = self.scene(u, index)
        psf = self._psf[slice(None) if index is None else index.to(self._psf.device)]
        with torch.no_grad():  # the noise's scale follows the signal; its gradient is the signal's
            level = torch_convolve(x, psf, self.margin)
        noise = torch_noise(level, self._photons[rows], self._read[rows], self.__draws)
        return torch_render(x, psf, noise, margin=self.margin).to(u.dtype)

    @torch.no_grad()
    def evaluate(self, u: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The scored UDC input: the perturbed scene under ``noise`` (N, 3, H, W), the
        dataset's own draw, which the arena passes here after the attack has returned."""
        from arena.data.formation import torch_render

        x = self.scene(u)
        return torch_render(x, self._psf, noise.double(), margin=self.margin).to(u.dtype).clamp(0, 1)


def _faults(what: str):
    """Decorator: an exception inside the system becomes a SystemFault naming ``what``."""
    def wrap(fn):
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (RuleViolation, SystemFault):
                raise
            except Exception as exc:
                raise SystemFault(f"{what} raised {type(exc).__name__}: {exc}") from exc
        inner.__name__, inner.__doc__ = fn.__name__, fn.__doc__
        return inner
    return wrap


class System:
    """A restorer behind a chain of defense links, each keeping its own gradient rule."""

    def __init__(self, model: torch.nn.Module, links: list[Defense], code: torch.Tensor | None = None):
        self.model = model
        self.links = list(links)
        self.code = code
        self.random = any(link.random for link in self.links)

    @_faults("the restorer")
    def restore(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """The restorer's output; ``index`` names each row's image (for its PSF code)."""
        if getattr(self.model, "arena_channels_last", False):
            x = x.contiguous(memory_format=torch.channels_last)
        if self.code is None:
            return self.model(x)
        return self.model(x, self.code if index is None else self.code[index.to(self.code.device)])

    @_faults("a defense link")
    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for link in self.links:
            x = link.purify(x, generator)
        return x

    @_faults("a defense link")
    def purify_differentiable(self, x: torch.Tensor, generator: torch.Generator,
                              bpda: bool = False) -> torch.Tensor:
        """The links under their declared gradient rules; with ``bpda`` (the standard suite's
        escalation) every link's backward pass is the identity, whatever it declares."""
        for link in self.links:
            if link.gradient == "exact" and not bpda:
                x = link.purify(x, generator)
            else:  # BPDA: forward is the real transform, backward goes through approx
                with torch.no_grad():
                    y = link.purify(x, generator)
                a = x if bpda else link.approx(x)
                x = a + (y - a).detach()
        return x

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.restore(self.purify(x, generator)).clamp(0, 1)


def objective_loss(objective: str, out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image loss; higher means a worse restoration."""
    if objective in ("mse", "mse_clean"):
        return (out - ref).pow(2).flatten(1).mean(1)
    if objective == "l1":
        return (out - ref).abs().flatten(1).mean(1)
    if objective == "ssim":
        return 1.0 - ssim(out, ref)
    raise ValueError(f"unknown objective '{objective}' (allowed: mse, mse_clean, l1, ssim)")


#: White-box evaluations kept for replay (arena.match.replay_problem): the first, and a
#: uniformly random sample of the others, drawn from the operating system's entropy so that no
#: plugin can tell which of its calls are checked (the draw changes no result).
REPLAYS = 4
_CHOOSER = random.SystemRandom()
#: how far a replayed output may differ from the attacked one (kernel choice on accelerators)
REPLAY_ATOL = 1e-4


class Ledger:
    """The arena's record of one attack: what it spent and the first rule it broke or fault it
    met. Held by the worker and shared by the oracles of the match (a transfer attack's
    surrogates spend from the same bound); attacks see read-only views of it."""

    def __init__(self, images: int = 0):
        #: sampled white-box evaluations: (system, its input, the generator's state or None,
        #: rows, the output the attack got), replayed without gradients after the attack
        self.replays: list[tuple] = []
        self.calls = 0
        self.queries = torch.zeros(images, dtype=torch.long) if images else None
        self.evaluations = 0  # rows through forward, each EOT draw counted
        self.model_rows: dict[int, int] = {}  # id(model) -> rows the oracles passed to it
        self.violation: str | None = None
        self.fault: str | None = None
        self.inside = 0  # > 0 while an oracle itself runs the system
        #: the attack asked for something that depends on the defended system (a query, the
        #: defended clean output): its batch cannot be shared with other defenses (arena/run/share.py)
        self.saw_system = False

    def replay_slot(self) -> int | None:
        """Where to keep this white-box evaluation for replay, if it is sampled."""
        self.calls += 1
        if self.calls <= REPLAYS:
            return self.calls - 1
        j = _CHOOSER.randrange(self.calls - 1)  # reservoir over every call after the first
        return j + 1 if j < REPLAYS - 1 else None

    def keep(self, slot: int, entry: tuple) -> None:
        if slot < len(self.replays):
            self.replays[slot] = entry
        else:
            self.replays.append(entry)


class QueryTarget:
    """The oracle of score-based and decision-free attacks: ``query`` and nothing that reaches
    the model. With ``hq`` and ``budget`` given (as in every match) it is strict: the reference
    is its own, rows are counted per image, and the budget is enforced; without them (unit
    tests, training loops) it trusts its caller."""

    kind = "score-based"
    #: what only a white-box oracle offers; asking a narrower oracle for it breaks the rules
    WHITE_BOX = frozenset({"forward", "loss", "loss_grad", "mean_loss", "reference", "clean_out",
                           "system", "model", "surrogate"})

    def __init__(self, system: System, threat: ThreatModel, objective: str,
                 generator: torch.Generator, eot: int = 1, clean_out: torch.Tensor | None = None,
                 *, hq: torch.Tensor | None = None, budget: Budget | None = None, rounds: int = 1,
                 ledger: Ledger | None = None, freeze: int | None = None, bpda: bool = False,
                 scene: SceneRender | None = None):
        self._system = system
        self._scene = scene  # scene threat model: every evaluation renders its input first
        self.threat = threat
        self.objective = objective
        self.generator = generator
        #: fixed randomness: every evaluation draws from a generator seeded with ``freeze``,
        #: so a random system is one deterministic function (the suite's fixed-randomness score)
        self._freeze = freeze
        self._bpda = bpda  # escalation: identity backward through every defense link
        random_links = attacks_defense(threat) and system.random
        # under scene the sensor noise is random whatever the system: EOT over it
        self.eot = eot if (freeze is None and (random_links or scene is not None)) else 1
        self._clean_out = clean_out
        self._hq = hq
        self._budget = budget
        self._rounds = rounds
        self._ledger = ledger or Ledger(int(hq.shape[0]) if hq is not None else 0)
        self.device = next(iter(system.model.parameters()), torch.empty(0)).device
        self.gradient_calls = 0
        self.trace: list[float] = []  # mean loss per gradient call: the convergence record
        self.start_grad: dict[str, float] | None = None

    def __getattr__(self, name: str):
        if name in QueryTarget.WHITE_BOX:
            self._break(f"a {self.kind} attack may only query its target; it used '{name}'")
        raise AttributeError(name)

    # -- bookkeeping: read-only views of the ledger --------------------------------------------

    @property
    def queries(self) -> torch.Tensor | None:
        q = self._ledger.queries
        return None if q is None or not bool(q.any()) else q.clone()

    @property
    def evaluations(self) -> int:
        return self._ledger.evaluations

    @property
    def violation(self) -> str | None:
        return self._ledger.violation

    @property
    def fault(self) -> str | None:
        return self._ledger.fault

    @property
    def strict(self) -> bool:
        return self._budget is not None

    @property
    def images(self) -> int:
        return int(self._hq.shape[0]) if self._hq is not None else 0

    def _break(self, why: str):
        self._ledger.violation = self._ledger.violation or why
        raise RuleViolation(self._ledger.violation)

    def _run(self, fn: Callable, *args):
        """Run the system for the attack: faults are remembered, so swallowing them is useless."""
        if self._ledger.violation:
            raise RuleViolation(self._ledger.violation)
        self._ledger.inside += 1
        try:
            return fn(*args)
        except SystemFault as exc:
            self._ledger.fault = self._ledger.fault or str(exc)
            raise
        finally:
            self._ledger.inside -= 1

    def _draw(self) -> torch.Generator:
        """The generator of the next evaluation's randomness."""
        if self._freeze is None:
            return self.generator
        return torch.Generator(device="cpu").manual_seed(self._freeze)

    def _restore(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        rows, key = self._ledger.model_rows, id(self._system.model)
        rows[key] = rows.get(key, 0) + x.shape[0]
        return self._system.restore(x, index)

    def _rows(self, x: torch.Tensor, index, what: str) -> torch.Tensor | None:
        """Check that each row of x names its image: one row per image, or ``index``."""
        n = self.images or x.shape[0]
        if index is None:
            if x.shape[0] != n:
                self._break(f"{what} got {x.shape[0]} rows for {n} images: pass index= naming "
                            "each row's image (every row counts)")
            return None
        index = torch.as_tensor(index, dtype=torch.long).cpu().flatten()
        if index.numel() != x.shape[0] or (index.numel() and (index.min() < 0 or index.max() >= n)):
            self._break(f"{what} index must name one image in [0, {n}) per row")
        return index

    def _check_input(self, x: torch.Tensor, what: str) -> None:
        if not self.strict:
            return
        h, w = (self._hq.shape if self._scene is None else self._scene.canvas)[-2:]
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (3, h, w):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            self._break(f"{what} takes (rows, 3, {h}, {w}) images; got {shape}")
        if x.dtype != self._hq.dtype or not torch.isfinite(x).all():
            self._break(f"{what} takes finite {self._hq.dtype} values; got {x.dtype}")
        lo, hi = float(x.detach().min()), float(x.detach().max())
        if lo < -RANGE_ATOL or hi > 1 + RANGE_ATOL:
            self._break(f"{what} was given values outside [0, 1]")

    def _ref(self, hq: torch.Tensor | None) -> torch.Tensor:
        if self.objective == "mse_clean":
            if self._clean_out is None:
                raise ValueError("objective 'mse_clean' needs the clean output")
            return self._clean_out
        if self._hq is not None:
            return self._hq
        if hq is None:
            raise ValueError("this target has no ground truth of its own: pass hq")
        return hq

    def _input(self, x: torch.Tensor, rows) -> torch.Tensor:
        """What the system receives for the attack's x: a copy (a defense that writes into its
        input must not reach the attack's tensor), or under ``scene`` the rendered scene."""
        return x.clone() if self._scene is None else self._scene(x, rows)

    def record(self, loss: torch.Tensor | float) -> None:
        """Append a loss (per image, or its mean) to the convergence record."""
        self.trace.append(float(loss.detach().float().mean()) if isinstance(loss, torch.Tensor) else float(loss))

    def queries_left(self) -> int:
        limit = self._budget.queries if self._budget is not None else 2**62
        q = self._ledger.queries
        return limit - (0 if q is None or not q.numel() else int(q.max()))

    # -- the oracle ----------------------------------------------------------------------------

    @torch.no_grad()
    def query(self, x: torch.Tensor, hq: torch.Tensor | None = None,
              index: torch.Tensor | None = None) -> torch.Tensor:
        """Per-row loss of the full defended system, each row one query of its image."""
        self._check_input(x, "query")
        self._ledger.saw_system = True
        n = self.images or x.shape[0]
        rows = self._rows(x, index, "query")
        counted = torch.arange(n) if rows is None else rows
        ledger = self._ledger
        if ledger.queries is None or ledger.queries.numel() != n:
            ledger.queries = torch.zeros(n, dtype=torch.long)
        ledger.queries += torch.bincount(counted, minlength=n)
        if self.strict and int(ledger.queries.max()) > self._budget.queries:
            self._break(f"{int(ledger.queries.max())} queries of one image exceed the limit of "
                        f"{self._budget.queries}")
        ref = self._ref(hq)
        if rows is not None and (self.strict or hq is None):
            ref = ref[rows.to(ref.device)]
        # a copy: a defense that writes into its input must not reach the attack's tensor
        out = self._run(lambda: self._restore(self._system.purify(self._input(x, rows), self._draw()), rows))
        return objective_loss(self.objective, out, ref)


class Target(QueryTarget):
    """The oracle of white-box attacks: a differentiable, counted ``forward`` besides ``query``."""

    kind = "white-box"

    def __getattr__(self, name: str):
        raise AttributeError(name)

    @property
    def clean_out(self) -> torch.Tensor | None:
        self._ledger.saw_system = True
        return None if self._clean_out is None else self._clean_out.detach().clone()

    def reference(self, hq: torch.Tensor | None = None) -> torch.Tensor:
        return self._ref(hq).detach().clone()

    def _limit(self) -> int | None:
        if not self.strict:
            return None
        return self._budget.evaluation_limit(self.images, self._rounds, self.eot)

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input(x, "forward")
        rows = self._rows(x, index, "forward")
        limit = self._limit()
        if limit is not None and self._ledger.evaluations + x.shape[0] > limit:
            self._break(f"the attack used more than its {limit} evaluations (images x (steps + 2) "
                        f"x rounds {self._rounds} x EOT {self.eot})")
        self._ledger.evaluations += x.shape[0]
        if self.start_grad is None and x.requires_grad and torch.is_grad_enabled():
            x.register_hook(self._record_start)

        def run():
            y = self._input(x, rows)
            g = self._draw() if attacks_defense(self.threat) else None
            # only differentiated evaluations are worth replaying (mean_loss runs without gradients)
            slot = self._ledger.replay_slot() if torch.is_grad_enabled() or x.requires_grad else None
            if slot is not None:  # what this evaluation saw, to replay it without gradients
                seen = (y.detach().clone(), None if g is None else g.get_state())
            if g is not None:
                y = self._system.purify_differentiable(y, g, bpda=self._bpda)
            out = self._restore(y, rows)
            if slot is not None:
                self._ledger.keep(slot, (self._system, *seen, rows, out.detach().clone()))
            return out
        return self._run(run)

    def _record_start(self, grad: torch.Tensor) -> None:
        if self.start_grad is None:
            self.start_grad = {"finite": bool(torch.isfinite(grad).all()),
                               "abs_mean": float(grad.abs().mean())}

    def loss(self, x: torch.Tensor, hq: torch.Tensor | None = None) -> torch.Tensor:
        return objective_loss(self.objective, self.forward(x), self._ref(hq))

    def mean_loss(self, x: torch.Tensor, hq: torch.Tensor | None = None) -> torch.Tensor:
        """The objective at x without gradient, averaged over as many draws as ``loss_grad``."""
        with torch.no_grad():
            return sum(self.loss(x, hq) for _ in range(self.eot)) / self.eot

    def loss_grad(self, x: torch.Tensor, hq: torch.Tensor | None = None,
                  steer: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image loss at x and its gradient, averaged over EOT draws where the system is
        random. ``steer(out, ref) -> (rank, drive)``: climb ``drive``, report ``rank``."""
        x = x.detach().requires_grad_(True)
        ref = self._ref(hq)
        loss_sum = torch.zeros(x.shape[0], device=x.device)
        grad_sum = torch.zeros_like(x)
        for _ in range(self.eot):
            out = self.forward(x)
            rank, drive = steer(out, ref) if steer else (objective_loss(self.objective, out, ref),) * 2
            try:
                (grad,) = torch.autograd.grad(drive.sum(), x)
            except RuntimeError as exc:
                if steer is not None:  # the attack's own loss: its own fault
                    raise
                self._ledger.fault = self._ledger.fault or f"the backward pass raised {type(exc).__name__}: {exc}"
                raise SystemFault(self._ledger.fault) from exc
            loss_sum += rank.detach()
            grad_sum += grad
        loss, grad = loss_sum / self.eot, grad_sum / self.eot
        self.gradient_calls += 1
        self.record(loss)
        return loss, grad


class TransferTarget(QueryTarget):
    """The oracle of transfer attacks: queries of the defended system, and white-box
    surrogates (undefended zoo restorers) to craft on."""

    kind = "transfer"

    def __init__(self, *args, surrogates: Callable[[str, dict | None], System] | None = None,
                 lq: torch.Tensor | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._surrogates = surrogates
        self._clean_lq = lq  # mse_clean on a surrogate compares with its own clean output

    def surrogate(self, name: str, params: dict[str, Any] | None = None) -> Target:
        if self._surrogates is None:
            raise RuntimeError("this target has no surrogate restorers")
        system = self._surrogates(name, params)
        clean = None
        if self.objective == "mse_clean":  # on the surrogate: away from its own clean output
            with torch.no_grad():
                clean = system.restore(self._clean_lq).clamp(0, 1)
        proxy = Target(system, "oblivious", self.objective, self.generator, clean_out=clean, eot=self.eot,
                       hq=self._hq, budget=self._budget, rounds=self._rounds, ledger=self._ledger,
                       scene=self._scene)
        return proxy


def make_target(kind: str, system: System, threat: ThreatModel, objective: str,
                generator: torch.Generator, *, eot: int, clean_out: torch.Tensor | None,
                hq: torch.Tensor, lq: torch.Tensor, budget: Budget, rounds: int,
                surrogates: Callable | None = None, ledger: Ledger | None = None,
                freeze: int | None = None, bpda: bool = False,
                scene: SceneRender | None = None) -> QueryTarget:
    """The oracle an attack of ``kind`` gets for one match (strict: own reference, budget)."""
    common = dict(eot=eot, clean_out=clean_out, hq=hq, budget=budget, rounds=rounds, ledger=ledger,
                  freeze=freeze, bpda=bpda, scene=scene)
    if kind == "white-box":
        return Target(system, threat, objective, generator, **common)
    if kind == "transfer":
        return TransferTarget(system, threat, objective, generator, surrogates=surrogates, lq=lq, **common)
    t = QueryTarget(system, threat, objective, generator, **common)
    t.kind = kind
    return t


def verify(x_adv: torch.Tensor, lq: torch.Tensor, budget: Budget, queries: torch.Tensor | None) -> str | None:
    """The arena's own check of an adversarial batch. Returns why it breaks the rules, or None."""
    if type(x_adv) is not torch.Tensor:  # a subclass could answer the checks below as it likes
        return f"the attack returned {type(x_adv).__name__}, not a plain torch.Tensor"
    if x_adv.shape != lq.shape:
        return f"adversarial batch has shape {tuple(x_adv.shape)}, expected {tuple(lq.shape)}"
    if x_adv.dtype != lq.dtype:
        return f"adversarial batch is {x_adv.dtype}, expected {lq.dtype}"
    if not torch.isfinite(x_adv).all():
        return "adversarial batch has non-finite values"
    lo, hi = float(x_adv.min()), float(x_adv.max())
    if lo < 0.0 or hi > 1.0:
        return f"adversarial batch leaves [0, 1] (min {lo:.4g}, max {hi:.4g})"
    delta = (x_adv.float() - lq).flatten(1)
    norms = delta.abs().amax(1) if budget.norm == "linf" else delta.norm(dim=1)
    limit = budget.eps * (1 + NORM_RTOL) + NORM_ATOL
    worst = float(norms.max())
    if worst > limit:
        return f"perturbation {budget.norm} norm {worst:.6g} exceeds eps {budget.eps:.6g}"
    if queries is not None and int(queries.max()) > budget.queries:
        return f"{int(queries.max())} queries exceed the limit of {budget.queries}"
    return None
