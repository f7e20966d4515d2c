"""Evaluate one match: clean, attacked, defended; the arena's checks; metrics.

Runs inside a worker. Everything it needs arrives as plain data (the Match) plus the worker's
warm components; everything it returns is plain data for the driver to store.

Entrants are adversaries (EVALUATION.md): components get copies of the arena's tensors, the
attack gets an oracle that fits its kind, and every outcome says whom a failure counts against
(``blame``: ``attack``, ``system`` or ``infra``).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from arena.api import MAX_ROUNDS, Attack, RuleViolation, SystemFault
from arena.data import UDCData
from arena.metrics import psnr, ssim
from arena.plan import Match
from arena.threat import (REPLAY_ATOL, Ledger, SceneRender, System, attacks_defense, is_scene,
                          make_target, patch_area, verify)

#: dB by which a fresh system's score of a stored adversarial batch may differ from the warm
#: worker's before the system is disqualified as stateful (float noise is ~1e-5 dB).
STATEFUL_TOLERANCE_DB = 0.01
#: how far apart two outputs must be before the probes call them different (float noise)
PROBE_ATOL = 1e-5
#: A random system's adversarial batch is evaluated under this many draws of its randomness:
#: the one of its clean pass, then N - 1 more. Per image the worst of them ("N-evaluation",
#: DiffHammer, NeurIPS 2024) is the score that ranks; their mean is the expectation.
N_EVALUATIONS = 8
#: EOT draws of sensor noise per gradient under the scene threat model when the config leaves
#: the count to a rule (suite matches); a listed match uses the config's ``eot_samples``.
SCENE_EOT = 4


def evaluation_seeds(seed: int, random: bool) -> list[int]:
    """The draws a match's adversarial batch is scored under (the first is the clean pass's)."""
    return [seed] + ([seed + 100_003 * k for k in range(1, N_EVALUATIONS)] if random else [])


def draw_scores(system: System, x: torch.Tensor, hq: torch.Tensor, seed: int,
                random: bool) -> tuple[torch.Tensor, dict[str, list[float] | None]]:
    """The output under the clean pass's draw, and per image PSNR/SSIM of it plus, for a random
    system, the mean and worst PSNR and worst SSIM over ``N_EVALUATIONS`` draws."""
    outs = [system(x.clone(), generator(s)) for s in evaluation_seeds(seed, random)]
    p = torch.stack([psnr(y, hq) for y in outs])
    q = torch.stack([ssim(y, hq) for y in outs])
    scores = {"psnr": p[0].tolist(), "ssim": q[0].tolist(),
              "psnr_mean": p.mean(0).tolist() if random else None,
              "psnr_worst": p.min(0).values.tolist() if random else None,
              "ssim_worst": q.min(0).values.tolist() if random else None}
    if not all(bool(torch.isfinite(y).all()) for y in outs):
        raise SystemFault("the system returned non-finite values on the adversarial input")
    return outs[0], scores


@dataclass
class Clean:
    """Clean restoration of a system on the match's images, shared by all attacks on it."""

    out: torch.Tensor
    psnr: torch.Tensor
    ssim: torch.Tensor
    defense_ms_per_mp: float
    time_s: float


@dataclass
class Outcome:
    status: str  # done | failed | disqualified
    reason: str | None = None
    error: str | None = None
    blame: str | None = None  # attack | system | infra
    scores: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)  # image, kind, uint8 HWC array
    timings: dict[str, float] = field(default_factory=dict)
    trace: list[float] = field(default_factory=list)
    start_grad: dict[str, float] | None = None
    gradient_calls: int = 0
    peak_mem_mb: float | None = None
    adv: np.ndarray | None = None  # the adversarial batch, float32, exactly as scored
    eot_used: int | None = None
    evaluations: int | None = None
    evaluation_limit: int | None = None
    probes: dict[str, Any] | None = None
    protocol: dict[str, Any] | None = None  # the suite's EOT rule result and escalation
    moved_db: float | None = None  # last_quarter_move_db of the trace
    converged: bool | None = None
    shareable: bool = False  # the batch may serve the other matches of its computation


def failed_result(match: Match, reason: str, attempts: int = 1, error: str | None = None) -> dict[str, Any]:
    """A match that failed outside any plugin's code path we could attribute: the worker died,
    timed out, or could not start (``blame`` infra). Ray colours its messages: no ANSI codes."""
    from arena.display import strip_ansi

    return {"key": match.key, "status": "failed", "reason": strip_ansi(reason), "blame": "infra",
            "error": strip_ansi(error or reason),
            "scores": [], "samples": [], "timings": {}, "trace": [], "start_grad": None,
            "gradient_calls": 0, "peak_mem_mb": None, "device": None,
            "defense_ms_per_mp": None, "attack_ms_per_mp": None, "attempts": attempts}


def generator(seed: int) -> torch.Generator:
    """Draws happen on the CPU so a seed means the same thing on every device."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clean_pass(system: System, lq: torch.Tensor, hq: torch.Tensor, seed: int) -> Clean:
    device = lq.device
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        purified = system.purify(lq.clone(), generator(seed))
        _sync(device)
        t1 = time.perf_counter()
        out = system.restore(purified).clamp(0, 1)
        _sync(device)
        t2 = time.perf_counter()
        defense_s = t1 - t0
        if any(link.transforms_input for link in system.links):
            # the defense's cost is timed warm, on a second purification of the same batch: the
            # first may load weights, allocate or compile, once per worker and not per image
            system.purify(lq.clone(), generator(seed))
            _sync(device)
            defense_s = time.perf_counter() - t2
    if not torch.isfinite(out).all():
        raise SystemFault("the system returned non-finite values on the clean input")
    megapixels = lq.shape[0] * lq.shape[-1] * lq.shape[-2] / 1e6
    return Clean(out, psnr(out, hq), ssim(out, hq), 1000 * defense_s / megapixels, t2 - t0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Probes: the worker checks a system's declarations before its first match
# --------------------------------------------------------------------------------------------


def probe_image(like: torch.Tensor, seed: int = 12345) -> torch.Tensor:
    """A smooth random image batch of ``like``'s shape that no component has seen before."""
    g = generator(seed)
    n, c, h, w = like.shape
    coarse = torch.rand((n, c, max(2, h // 4), max(2, w // 4)), generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (0.15 + 0.7 * img).to(like.device)


def _differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape != b.shape or not torch.allclose(a, b, atol=PROBE_ATOL, rtol=0)


def probe(system: System, fresh: Callable[[], System], like: torch.Tensor, seed: int) -> dict[str, Any]:
    """Run cheap checks of what the system's links declare; ``violation`` says what is false.

    - randomness: the same generator state twice must give the same output (anything else draws
      from outside the generator: the global RNG, the clock); two states may differ only if a
      link declares ``random``;
    - statefulness: an input seen twice around another gives the same output both times, and the
      same as a freshly built system gives;
    - gradients: under the declared rules they exist, are finite and not all zero
      (``gradient_masked`` if not: the standard suite escalates to BPDA instead of
      disqualifying).
    """
    out: dict[str, Any] = {"violation": None}
    z = probe_image(like, seed)
    nudge = (torch.rand(z.shape, generator=generator(seed + 1)).to(z.device) - 0.5) * (4 / 255)
    z2 = (z + nudge).clamp(0, 1)
    try:
        system(z.clone(), generator(seed))  # the warm system sees z, then a near neighbour
        after = system(z2.clone(), generator(seed))
        again = system(z2.clone(), generator(seed))
        other = system(z2.clone(), generator(seed + 7))
        anew = fresh()(z2.clone(), generator(seed))
    except SystemFault as exc:
        out["fault"] = f"probe: {exc}"
        return out
    out["random_declared"], out["random_observed"] = system.random, _differ(after, other)
    if not all(bool(torch.isfinite(y).all()) for y in (after, again, other, anew)):
        out["fault"] = "probe: the system returned non-finite values"
        return out
    if _differ(after, again):
        out["violation"] = ("probe: the same input and generator state gave different outputs: the "
                            "defended system draws randomness outside its generator or keeps state")
    elif _differ(after, anew):
        out["violation"] = ("probe: stateful: after seeing a nearby input the system's output "
                            "differs from a freshly built system's")
    elif out["random_observed"] and not system.random:
        out["violation"] = ("probe: a defense declared random = False, but two generator states "
                            "give different outputs; declare random = True")
    if out["violation"]:
        return out
    out.update(_probe_gradient(system, z2, seed))
    return out


def _probe_gradient(system: System, x: torch.Tensor, seed: int) -> dict[str, Any]:
    if not system.links:
        return {}
    x = x.clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            y = system.restore(system.purify_differentiable(x, generator(seed)))
            (grad,) = torch.autograd.grad(y.square().mean(), x)
    except Exception as exc:  # noqa: BLE001 - any failure of the declared gradient is the finding
        cause = exc.__cause__ or exc
        return {"gradient_masked": True,
                "violation": f"probe: the gradient under the declared rules raised "
                             f"{type(cause).__name__}: {cause}"}
    rules = ", ".join(f"{type(link).name}={link.gradient}" for link in system.links)
    if not torch.isfinite(grad).all():
        return {"gradient_masked": True,
                "violation": f"probe: non-finite gradient through the declared rules ({rules})"}
    magnitude = float(grad.abs().mean())
    if magnitude == 0.0:
        return {"gradient_masked": True,
                "violation": f"probe: zero gradient through the declared rules ({rules}): the "
                             "gradient is masked; declare gradient = 'bpda' with an approx"}
    return {"grad_abs_mean": magnitude}


# --------------------------------------------------------------------------------------------
# The match
# --------------------------------------------------------------------------------------------


HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks",
              "_load_state_dict_pre_hooks")


def module_state(model: torch.nn.Module) -> tuple:
    """What an attack could change about a module tree without touching a weight: its hooks,
    its instance attributes (a replaced ``forward``), its train/eval mode."""
    return tuple((name, type(m), m.training, tuple(tuple(getattr(m, d, {})) for d in HOOK_DICTS),
                  tuple(sorted(vars(m))), id(vars(m).get("forward")))
                 for name, m in model.named_modules())


def _global_hooks() -> tuple:
    mod = torch.nn.modules.module
    return tuple(tuple(getattr(mod, n, {})) for n in dir(mod) if n.startswith("_global_") and n.endswith("hooks"))


class Watch:
    """The worker's own view of what an attack did, beside the oracle's ledger: the rows every
    watched restorer module sees while armed, and whether its hooks, attributes or mode, or
    torch's global module hooks, changed. Evaluations made around the oracle (Python's back
    doors: the garbage collector, private attributes) show up here."""

    def __init__(self):
        self.armed = False
        self.rows: dict[int, int] = {}
        self.grad_rows = 0  # rows seen with gradients enabled: each one is an evaluation
        self.strangers = 0  # module forwards outside any oracle call (score-based attacks)
        self.ledger = None
        self._state: dict[int, tuple] = {}
        self._globals: tuple = ()
        self._global = None

    def watch(self, model: torch.nn.Module) -> None:
        def count(module, args):
            if self.armed:
                n = int(args[0].shape[0])
                self.rows[id(module)] = self.rows.get(id(module), 0) + n
                self.grad_rows += n if torch.is_grad_enabled() else 0
        model.register_forward_pre_hook(count)
        self._state[id(model)] = module_state(model)

    def arm(self, ledger, only_oracle: bool) -> None:
        self.armed, self.rows, self.grad_rows, self.strangers, self.ledger = True, {}, 0, 0, ledger
        if only_oracle:  # a score-based attack runs no network of its own

            def any_module(module, args):
                if not ledger.inside:
                    self.strangers += 1
            self._global = torch.nn.modules.module.register_module_forward_pre_hook(any_module)
        self._globals = _global_hooks()

    def disarm(self) -> str | None:
        """Stop counting; say if torch's global hooks changed while armed."""
        self.armed = False
        changed = _global_hooks() != self._globals
        if self._global is not None:
            self._global.remove()
            self._global = None
        return "the attack changed torch's global module hooks" if changed else None

    def tampered(self, model: torch.nn.Module) -> bool:
        """Whether the module tree's hooks, attributes or mode differ from when it was loaded."""
        return module_state(model) != self._state.get(id(model))

    def problem(self, kind: str, models: dict[int, torch.nn.Module], row_limit: int,
                grad_limit: int | None) -> str | None:
        if self.strangers:
            return f"a {kind} attack ran a neural network outside its target ({self.strangers} calls)"
        if grad_limit is not None and self.grad_rows > grad_limit:
            return (f"the restorer ran {self.grad_rows} images with gradients during the attack, more "
                    f"than its bound of {grad_limit} evaluations")
        passed = self.ledger.model_rows
        for key in set(passed) | set(self.rows):
            seen, allowed = self.rows.get(key, 0), passed.get(key, 0)
            if key in models and seen > allowed:
                return f"the attack evaluated the restorer outside its target ({seen - allowed} uncounted images)"
            if key in models and seen < allowed:
                return "the attack tampered with the arena's count of what the restorer saw"
        seen = sum(self.rows.get(k, 0) for k in models)
        if seen > row_limit:
            return f"the restorer saw {seen} images during the attack, more than its bound of {row_limit}"
        return None


def replay_problem(ledger) -> str | None:
    """Replay the attack's sampled white-box evaluations without gradients, each under the
    generator state it drew from: a system that computes another function when it is being
    differentiated (``torch.is_grad_enabled()``, ``x.requires_grad``) misleads every gradient
    attack and is scored on what it computes otherwise. Which calls are replayed is drawn from
    the operating system's entropy (arena.threat.REPLAYS), so the system cannot know."""
    for system, x, state, rows, out in ledger.replays:
        try:
            with torch.no_grad():
                y = x.clone()
                if state is not None:
                    g = torch.Generator(device="cpu")
                    g.set_state(state)
                    y = system.purify(y, g)
                again = system.restore(y, rows)
        except SystemFault as exc:
            return f"the system failed when an attacked evaluation was replayed without gradients: {exc}"
        gap = float((again - out).abs().max()) if again.shape == out.shape else float("inf")
        if not gap <= REPLAY_ATOL:
            return (f"the system computes another function under gradients: an attacked evaluation "
                    f"replayed without gradients (same input and generator state) differs by {gap:.3g} "
                    f"(tolerance {REPLAY_ATOL:g})")
    return None


def evaluate(match: Match, system: System, attack: Attack, data: UDCData, clean: Clean, *,
             samples: int = 0, surrogates: Callable | None = None, watch: Watch | None = None,
             models: dict[int, torch.nn.Module] | None = None,
             integrity: Callable[[], str | None] = lambda: None,
             rebuild: Callable[[], System] | None = None, escalate: str | None = None,
             eot_memo: dict | None = None, given: dict[str, Any] | None = None) -> Outcome:
    """Attack the system on copies of the data; check the rules; score clean and adversarial.

    ``rebuild`` gives the system that scores the result: a new one, so nothing the attack did
    to the instance it attacked (or its target's private parts) reaches the score.
    ``escalate`` (why, or None): attack a suite match's system through BPDA from the start.
    Without it a suite's white-box attack under the adaptive threat is rerun through BPDA when
    its start gradient is zero or non-finite (the standard suite's escalation).
    ``given``: the result of another match of the same attack computation (arena/run/share.py):
    its adversarial batch is verified and scored here instead of attacking again."""
    device = clean.out.device
    lq, hq = data.lq.to(device), data.hq.to(device)
    scene = None
    if is_scene(match.threat):
        if not data.has_scenes:
            return Outcome("failed", blame="infra", reason=f"threat model '{match.threat}' needs the "
                           f"dataset's HDR scenes and PSFs; '{data.name}' has none")
        scene = SceneRender(data.scene.to(device), data.psf.to(device), data.photons,
                            data.read_noise, match.seed, patch_area(match.threat),
                            margin=(data.scene.shape[-1] - data.lq.shape[-1]) // 2)
        given = None  # never shared (arena/run/share.py): the batch is a scene, not an image
    reference = clean.out
    if match.threat == "oblivious" and attack.params.objective == "mse_clean":
        with torch.no_grad():
            reference = system.restore(lq.clone()).clamp(0, 1)
    kind = match.attack_kind  # what the class declared when the tournament was planned
    rounds = min(max(int(attack.rounds()), 1), MAX_ROUNDS)
    adaptive_white_box = attacks_defense(match.threat) and kind == "white-box" and bool(system.links)
    if match.suite and attacks_defense(match.threat):  # the suite attacks the most exact gradients
        system = System(system.model, [link.exact() for link in system.links], system.code)
    can_escalate = bool(match.suite) and adaptive_white_box
    escalated = escalate if can_escalate else None
    approximated = [f"{type(link).name}={link.gradient_rule()}" for link in system.links
                    if link.gradient_rule() != "exact"]
    protocol: dict[str, Any] = {"lower_bound": ", ".join(approximated) if adaptive_white_box and approximated else None}
    if given is not None:
        return _score(match, system, data, clean, lq, hq, samples, integrity, rebuild,
                      *_reused(given, clean, protocol))
    while True:
        try:
            eot = _eot_count(match, system, lq, hq, bool(escalated), eot_memo, protocol)
        except SystemFault as exc:
            return _judged(Outcome("done"), "failed", "system", str(exc), exc)
        run = _attack_once(match, kind, system, attack, lq, hq, reference, rounds, eot, watch,
                           surrogates, bpda=bool(escalated), scene=scene)
        outcome, x_adv, ledger, target, caught, hooks, limit = run
        outcome.timings = {"clean": clean.time_s, "attack": outcome.timings["attack"]}
        repaired = integrity()  # always: whatever was damaged is put back before the next match
        problem = (ledger.violation or hooks
                   or (watch.problem(kind, models or {}, len(lq) * match.budget.queries + (limit or 0),
                                     limit or 0) if watch is not None else None)
                   or (f"the attack changed its declared kind to '{attack.kind}'" if attack.kind != kind else None)
                   or repaired)
        if problem:
            return _judged(outcome, "disqualified", "attack", problem, caught)
        if ledger.fault:
            return _judged(outcome, "failed", "system", ledger.fault, caught)
        cheat = replay_problem(ledger)
        if cheat:
            return _judged(outcome, "disqualified", "system", cheat, caught)
        if escalated is None and can_escalate and _masked(target.start_grad):
            escalated = (f"start gradient {'non-finite' if not target.start_grad['finite'] else 'zero'} "
                         "under the declared rules")
            continue
        break
    protocol["escalated"] = escalated
    outcome.protocol = protocol
    outcome.shareable = not ledger.saw_system
    if caught is not None:
        return _judged(outcome, "failed", "attack", f"attack raised {type(caught).__name__}: {caught}", caught)
    return _score(match, system, data, clean, lq, hq, samples, integrity, rebuild, outcome, x_adv,
                  ledger.queries, scene)


def _reused(given: dict[str, Any], clean: Clean, protocol: dict[str, Any]) -> tuple[Outcome, torch.Tensor, None]:
    """The outcome and batch of a match that reuses another's attack computation: the attack's
    record is the computing match's; its own attack time is zero."""
    outcome = Outcome("done", trace=list(given["trace"] or []), start_grad=given["start_grad"],
                      gradient_calls=given["gradient_calls"], eot_used=given["eot_used"],
                      evaluations=given["evaluations"], evaluation_limit=given["evaluation_limit"],
                      moved_db=given["moved_db"], converged=given["converged"],
                      protocol={**(given["protocol"] or {}), **protocol, "computed_in": given["key"]})
    outcome.timings = {"clean": clean.time_s, "attack": 0.0}
    return outcome, torch.from_numpy(np.array(given["adv"], dtype=np.float32)), None


def _score(match: Match, system: System, data: UDCData, clean: Clean, lq, hq, samples: int,
           integrity: Callable[[], str | None], rebuild: Callable[[], System] | None,
           outcome: Outcome, x_adv, queries, scene: SceneRender | None = None) -> Outcome:
    """Verify the adversarial batch against the rules, then score it with a rebuilt system.
    Under ``scene`` the batch is a perturbed scene, checked against the budget around the
    clean one; what is stored and scored is its rendering under the dataset's noise draw."""
    device = lq.device
    if type(x_adv) is torch.Tensor and x_adv.device != device:  # a reused batch arrives on the CPU
        x_adv = x_adv.to(device)
    problem = verify(x_adv, lq if scene is None else scene.start(), match.budget, queries)
    if problem:
        return _judged(outcome, "disqualified", "attack", problem)
    x_adv = x_adv.detach().clone()
    shown = None
    if scene is not None:
        shown = _scene_views(scene, x_adv)
        x_adv = scene.evaluate(x_adv, data.noise.to(device))
    outcome.adv = x_adv.cpu().numpy().copy()
    t1 = time.perf_counter()
    try:  # scored by a system rebuilt after the attack, under the clean pass's draw (for a
        # frozen match: the draw it was attacked under); the N draws of a random system are
        # the fresh re-scoring's (the scores that count)
        adv_out, drawn = draw_scores(rebuild() if rebuild else system, x_adv, hq, match.seed, False)
    except SystemFault as exc:
        return _judged(outcome, "failed", "system", str(exc), exc)
    problem = integrity()
    if problem:
        return _judged(outcome, "disqualified", "system", problem)
    outcome.timings["eval"] = time.perf_counter() - t1
    outcome.scores = score_rows(data.ids, clean, drawn, x_adv, lq, queries)
    outcome.samples = sample_rows(data.ids, match, samples, lq, x_adv, clean.out, adv_out, hq, shown)
    return outcome


def _attack_once(match: Match, kind: str, system: System, attack: Attack, lq, hq, reference,
                 rounds: int, eot: int, watch: Watch | None, surrogates, bpda: bool,
                 scene: SceneRender | None = None):
    """One run of the attack on its oracle: (outcome so far, what it returned, ledger, target,
    what it raised, what the watch saw of torch's global hooks, its evaluation bound)."""
    limit = match.budget.evaluation_limit(len(lq), rounds, eot) if kind in ("white-box", "transfer") else None
    ledger = Ledger(len(lq))
    target = make_target(kind, system, match.threat, attack.params.objective,
                         generator(match.seed + 1), eot=eot, clean_out=reference.clone(),
                         hq=hq.clone(), lq=lq.clone(), budget=match.budget, rounds=rounds,
                         surrogates=surrogates, ledger=ledger,
                         freeze=match.seed if match.frozen else None, bpda=bpda, scene=scene)
    t0 = time.perf_counter()
    x_adv, caught, hooks = None, None, None
    if watch is not None:
        watch.arm(ledger, only_oracle=kind in ("score-based", "decision-free"))
    try:
        start = lq.clone() if scene is None else scene.start()  # scene: the light pattern's canvas
        x_adv = attack.run(target, start, hq.clone(), match.budget, generator(match.seed + 2))
    except BaseException as exc:  # noqa: BLE001 - a timeout must pass, everything else is judged
        if not isinstance(exc, Exception):
            raise
        caught = exc
    finally:
        if watch is not None:
            hooks = watch.disarm()
    _sync(lq.device)
    moved = last_quarter_move_db(target.trace)
    outcome = Outcome("done", trace=list(target.trace), start_grad=target.start_grad,
                      gradient_calls=int(target.gradient_calls), eot_used=eot,
                      evaluations=ledger.evaluations, evaluation_limit=limit,
                      moved_db=moved, converged=None if moved is None else moved <= NOT_CONVERGED_DB)
    outcome.timings = {"attack": time.perf_counter() - t0}
    return outcome, x_adv, ledger, target, caught, hooks, limit


def _masked(start_grad: dict[str, Any] | None) -> bool:
    return start_grad is not None and (not start_grad["finite"] or start_grad["abs_mean"] == 0.0)


def _eot_count(match: Match, system: System, lq, hq, bpda: bool, memo: dict | None,
               protocol: dict[str, Any]) -> int:
    """The EOT count of the match: the config's, or for a suite match on a random system under
    the adaptive threat the count of the rule (arena.suite.eot_count), measured once per
    system, seed and gradient rule (``memo``) on the clean inputs, outside the attack's bound."""
    from arena.suite import EOT_BY_RULE, by_label, eot_count

    if is_scene(match.threat):  # EOT over sensor noise (and the links' randomness) always
        return SCENE_EOT if match.eot == EOT_BY_RULE else match.eot
    if not (match.threat == "adaptive" and system.random) or match.frozen:
        return 1
    if match.eot != EOT_BY_RULE:
        return match.eot
    memo = {} if memo is None else memo
    key = (match.seed, bpda)
    if key not in memo:
        def draw(k: int) -> torch.Tensor:
            x = lq.clone().requires_grad_(True)
            with torch.enable_grad():
                y = system.restore(system.purify_differentiable(x, generator(match.seed + 3 + 7919 * k), bpda=bpda))
                try:
                    (g,) = torch.autograd.grad((y - hq).pow(2).flatten(1).mean(1).sum(), x)
                except RuntimeError as exc:
                    raise SystemFault(f"the backward pass raised {type(exc).__name__}: {exc}") from exc
            return g.detach()
        memo[key] = eot_count(draw)
    protocol["eot_rule"] = memo[key]
    suite = by_label(match.suite)
    return int(memo[key]["count"]) * (suite.eot_factor if suite else 1)


#: A match whose last quarter of iterations still raised its loss by more than this many dB
#: (for MSE objectives: moved robust PSNR) is "not converged".
NOT_CONVERGED_DB = 0.1


def last_quarter_move_db(trace: list[float]) -> float | None:
    """How much the best loss so far rose over the last quarter of an iterative attack's
    gradient calls, in dB (10 log10 of the ratio: for an MSE objective, the robust PSNR it
    moved). None for fewer than 8 calls or a non-positive loss."""
    if len(trace) < 8:
        return None
    best = np.maximum.accumulate(np.asarray(trace, dtype=np.float64))
    start = best[(3 * len(best)) // 4 - 1]
    if not np.isfinite(best[-1]) or start <= 0:
        return None
    return float(10 * np.log10(best[-1] / start))


def _judged(outcome: Outcome, status: str, blame: str, reason: str, exc: BaseException | None = None) -> Outcome:
    outcome.status, outcome.blame, outcome.reason = status, blame, reason
    outcome.adv, outcome.scores = None, []
    if exc is not None:
        outcome.error = "".join(traceback.format_exception(exc))
    return outcome


def score_rows(ids, clean: Clean, drawn: dict[str, Any], x_adv, lq, queries) -> list[dict[str, Any]]:
    delta = (x_adv - lq).flatten(1)
    queries = queries if queries is not None else torch.zeros(len(lq), dtype=torch.long)
    pick = lambda key, i: None if drawn.get(key) is None else drawn[key][i]  # noqa: E731
    return [{"image": image,
             "clean_psnr": float(clean.psnr[i]), "clean_ssim": float(clean.ssim[i]),
             "adv_psnr": drawn["psnr"][i], "adv_ssim": drawn["ssim"][i],
             "adv_psnr_mean": pick("psnr_mean", i), "adv_psnr_worst": pick("psnr_worst", i),
             "adv_ssim_worst": pick("ssim_worst", i),
             "linf": float(delta[i].abs().max()), "l2": float(delta[i].norm()),
             "queries": int(queries[i])} for i, image in enumerate(ids)]


def _scene_views(scene: SceneRender, u_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The frame of the perturbed scene, tone-mapped, and of the radiance added to it (as the
    camera sees them: a patch match's perturbation outside its patch is not in the scene)."""
    from arena.data.formation import tonemap

    m = scene.margin
    frame = (..., slice(m, u_adv.shape[-2] - m), slice(m, u_adv.shape[-1] - m))
    with torch.no_grad():
        x, x0 = scene.scene(u_adv), scene.scene(scene.start())
    return tonemap(x).to(u_adv.dtype)[frame], (x - x0).to(u_adv.dtype)[frame]


def _amplified(d: torch.Tensor, match: Match, own_scale: bool) -> torch.Tensor:
    scale = match.budget.eps if match.budget.norm == "linf" and not own_scale else float(d.abs().max())
    return (0.5 + d / (2 * max(scale, 1e-8))).clamp(0, 1)


def sample_rows(ids, match: Match, samples: int, lq, x_adv, clean_out, adv_out, hq,
                scene: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[dict[str, Any]]:
    """The gallery's pictures (arena.display.SAMPLE_KINDS). Under ``scene``, ``x_adv`` is the
    rendered UDC input (its ``delta`` amplified by its own largest value, as the budget bounds
    the scene), and ``scene`` adds the perturbed scene and its perturbation."""
    rows = []
    for i in range(min(samples, len(lq))):
        pictures = [("lq", lq[i]), ("adv", x_adv[i]),
                    ("delta", _amplified(x_adv[i] - lq[i], match, own_scale=scene is not None)),
                    ("restored_clean", clean_out[i]), ("restored_adv", adv_out[i]), ("hq", hq[i])]
        if scene is not None:
            pictures += [("scene_adv", scene[0][i]), ("scene_delta", _amplified(scene[1][i], match, False))]
        rows += [{"image": ids[i], "kind": kind, "array": to_uint8(img)} for kind, img in pictures]
    return rows


# --------------------------------------------------------------------------------------------
# Fresh re-scoring: the score that counts
# --------------------------------------------------------------------------------------------


def rescore(systems: list[tuple[Callable[[], System], list[dict[str, Any]]]], data: UDCData,
            device: torch.device) -> list[dict[str, Any]]:
    """Score stored adversarial batches with freshly built systems (one per batch), then the
    clean inputs: every system's adversarial batches come before any clean image, so no
    instance, and no state a plugin keeps in its module, has seen the clean images or the
    attack's queries. ``systems``: (build, entries) with entries of ``key``, ``seed``, ``adv``
    (float32 array). Returns per system the per-image adversarial PSNR/SSIM per key and the
    clean ones per seed, or ``fault``."""
    lq, hq = data.lq.to(device), data.hq.to(device)
    results = [{"adv": {}, "clean": {}, "fault": None} for _ in systems]

    def scored(i: int, x: torch.Tensor, seed: int, draws: bool) -> dict[str, list[float]] | None:
        build, out = systems[i][0], results[i]
        if out["fault"]:
            return None
        try:
            fresh = build()
            return draw_scores(fresh, x, hq, seed, draws and fresh.random)[1]
        except SystemFault as exc:
            out["fault"] = str(exc)
            return None

    for i, (_, entries) in enumerate(systems):
        for e in entries:
            x = torch.from_numpy(np.asarray(e["adv"], dtype=np.float32)).to(device)
            results[i]["adv"][e["key"]] = scored(i, x, e["seed"], True)
    for i, (_, entries) in enumerate(systems):
        for seed in sorted({e["seed"] for e in entries}):
            results[i]["clean"][seed] = scored(i, lq.clone(), seed, False)
    return results


def warm_gap(scores: list[dict[str, Any]], fresh_adv: dict[str, list], fresh_clean: dict[str, list]) -> float:
    """Largest |warm - fresh| PSNR over the images of one match, clean or adversarial."""
    gaps = [abs(s["adv_psnr"] - a) for s, a in zip(scores, fresh_adv["psnr"])]
    gaps += [abs(s["clean_psnr"] - c) for s, c in zip(scores, fresh_clean["psnr"])]
    finite = [g for g in gaps if np.isfinite(g)]
    return float("inf") if len(finite) < len(gaps) else max(finite, default=0.0)


__all__ = ["Clean", "Outcome", "RuleViolation", "STATEFUL_TOLERANCE_DB", "Watch", "clean_pass",
           "evaluate", "probe", "rescore", "warm_gap"]
