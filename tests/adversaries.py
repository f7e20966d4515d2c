"""Adversarial plugins: entrants that try to rank first by breaking the arena's rules, or to
hurt the other entrants (EVALUATION.md, "Entrants are adversaries").

Every class lives at module level: the arena pickles plugin classes by reference into a fresh
re-scoring process, which imports this module from the test process's ``sys.path``. Cheaters
that reach into the arena's process (the garbage collector, hooks) restrict themselves to the
objects of the running arena worker, so that they cannot damage other tests of the session.

``registry()`` builds a plugin registry holding the built-in plugins and every class here;
``plugin_module(*classes)`` is the module behind it (one hook per role, like
``tests/helpers.py:module_with``).
"""

from __future__ import annotations

import gc
from types import ModuleType
from typing import ClassVar

import torch
from torch import nn

from arena.api import Attack, Defense, Restorer, RuleViolation, SystemFault
from arena.hookspecs import hookimpl
from arena.plugins import load_registry
from arena.testing import TinyNet


def shifted(lq: torch.Tensor, eps: float) -> torch.Tensor:
    """A perturbation of exactly eps/2 per pixel that stays inside [0, 1]."""
    return torch.where(lq > 0.5, lq - eps / 2, lq + eps / 2)


def fgsm_step(lq: torch.Tensor, grad: torch.Tensor, eps: float) -> torch.Tensor:
    return (lq + eps * grad.sign()).clamp(lq - eps, lq + eps).clamp(0, 1)


def arena_worker():
    """The arena worker running this match, found through the garbage collector."""
    from arena.run.worker import Worker

    workers = [o for o in gc.get_objects() if type(o) is Worker]
    return workers[-1] if workers else None


def arena_models() -> list[nn.Module]:
    """Restorer modules the arena watches (they carry its forward pre-hook), found by gc."""
    return [o for o in gc.get_objects() if issubclass(type(o), nn.Module) and o._forward_pre_hooks]


# ============================================================================================
# Attacks that damage the arena's data or models
# ============================================================================================


class InPlaceInputs(Attack):
    """Writes into the lq and hq it is given, then returns a valid perturbation (cheater)."""

    name = "cheat_inplace_inputs"

    def perturb(self, target, lq, hq, budget, generator):
        adv = shifted(lq, budget.eps)  # from the pristine values it was given
        lq.fill_(0.0)
        hq.fill_(1.0)
        return adv


class GcData(Attack):
    """Finds the worker's UDCData through the garbage collector and darkens it (cheater)."""

    name = "cheat_gc_data"

    def perturb(self, target, lq, hq, budget, generator):
        from arena.data import UDCData

        for obj in gc.get_objects():
            if type(obj) is UDCData and obj.lq.shape == lq.shape:
                obj.lq.mul_(0.5)
                obj.hq.mul_(0.5)
        return lq.clone()


class GcBackups(Attack):
    """Darkens the worker's data *and* the backup copy it restores from (cheater)."""

    name = "cheat_gc_backups"

    def perturb(self, target, lq, hq, budget, generator):
        worker = arena_worker()
        if worker is not None:
            backups = [b for b in getattr(worker, "_data_bytes", ())[:2] if b is not None]
            for t in (worker.data.lq, worker.data.hq):
                t.mul_(0.5)
            for b in backups:  # bytes: there is no in-place write to make; try anyway
                try:
                    memoryview(b)[:] = bytes(len(b))
                except TypeError:
                    pass
        return lq.clone()


class PrivateWeights(Attack):
    """Zeroes the restorer's weights through ``target._system.model`` (cheater)."""

    name = "cheat_private_weights"

    def perturb(self, target, lq, hq, budget, generator):
        with torch.no_grad():
            for p in target._system.model.parameters():
                p.zero_()
        return lq.clone()


class GcWeights(Attack):
    """Finds the arena's restorer modules through the garbage collector and scales their
    weights (cheater)."""

    name = "cheat_gc_weights"

    def perturb(self, target, lq, hq, budget, generator):
        with torch.no_grad():
            for model in arena_models():
                for p in model.parameters():
                    p.mul_(0.5)
        return lq.clone()


class _HalfOutput:
    """A forward hook that halves a module's output (picklable, harmless to inspect)."""

    def __call__(self, module, args, output):
        return output * 0.5


class HookModel(Attack):
    """Registers a forward hook on the `tiny` restorer that halves its output for every later
    match; the weights stay as they were (cheater)."""

    name = "cheat_hook_model"

    def perturb(self, target, lq, hq, budget, generator):
        model = target._system.model
        if isinstance(model, TinyNet) and not model._forward_hooks:
            model.register_forward_hook(_HalfOutput())
        return lq.clone()


class _Zero(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


class SwapModel(Attack):
    """Replaces the `identity` system's restorer by a module that outputs zeros, so its own
    match looks devastating (cheater)."""

    name = "cheat_swap_model"

    def perturb(self, target, lq, hq, budget, generator):
        if type(target._system.model).__name__ == "_Identity":
            target._system.model = _Zero()
        return lq.clone()


class GcCleanCache(Attack):
    """Rewrites the worker's cached clean scores of the `cheat_victim` system (cheater)."""

    name = "cheat_gc_clean_cache"

    def perturb(self, target, lq, hq, budget, generator):
        from arena.match import Clean

        if isinstance(target._system.model, VictimNet):
            clean_out = target.clean_out
            for obj in gc.get_objects():
                if type(obj) is Clean and obj.out.shape == clean_out.shape and torch.equal(obj.out, clean_out):
                    obj.psnr.fill_(99.0)
        return lq.clone()


# ============================================================================================
# Attacks that cheat the oracle: queries, evaluations, kinds, results
# ============================================================================================


class QueryRows(Attack):
    """Score-based: queries 8 candidates per image in one call, without index= (cheater)."""

    name = "cheat_query_rows"
    kind = "score-based"

    def perturb(self, target, lq, hq, budget, generator):
        target.query(lq.repeat(8, 1, 1, 1))
        return lq.clone()


class QueryBudget(Attack):
    """Score-based: names each row's image, but queries past budget.queries (cheater)."""

    name = "cheat_query_budget"
    kind = "score-based"

    def perturb(self, target, lq, hq, budget, generator):
        index = torch.arange(len(lq)).repeat(8)
        for _ in range(budget.queries):
            target.query(lq.repeat(8, 1, 1, 1), index=index)
        return lq.clone()


class QueryReset(Attack):
    """Score-based: queries 5x its budget and zeroes the oracle's query counter after each call
    (cheater)."""

    name = "cheat_query_reset"
    kind = "score-based"

    def perturb(self, target, lq, hq, budget, generator):
        index = torch.arange(len(lq)).repeat(8)
        for _ in range(5 * budget.queries // 8 + 1):
            target.query(lq.repeat(8, 1, 1, 1), index=index)
            target.queries.zero_()
        return lq.clone()


class ScoreForward(Attack):
    """Score-based, but calls target.forward (cheater)."""

    name = "cheat_score_forward"
    kind = "score-based"

    def perturb(self, target, lq, hq, budget, generator):
        target.forward(lq)
        return lq.clone()


class ScoreLossGrad(Attack):
    """Score-based, but asks for target.loss_grad (cheater)."""

    name = "cheat_score_loss_grad"
    kind = "score-based"

    def perturb(self, target, lq, hq, budget, generator):
        _, grad = target.loss_grad(lq, hq)
        return fgsm_step(lq, grad, budget.eps)


class ScoreSystem(Attack):
    """Score-based, but reaches for target.system (cheater)."""

    name = "cheat_score_system"
    kind = "score-based"

    def perturb(self, target, lq, hq, budget, generator):
        target.system.model(lq)
        return lq.clone()


class KindFlip(Attack):
    """Declared score-based (the class), white-box on the instance: gets gradients (cheater)."""

    name = "cheat_kind_flip"
    kind = "score-based"

    def __init__(self, params=None):
        super().__init__(params)
        self.kind = "white-box"

    def perturb(self, target, lq, hq, budget, generator):
        _, grad = target.loss_grad(lq, hq)
        return fgsm_step(lq, grad, budget.eps)


class ScorePrivateModel(Attack):
    """Score-based, but runs the restorer through target._system.model (cheater)."""

    name = "cheat_score_private_model"
    kind = "score-based"

    def perturb(self, target, lq, hq, budget, generator):
        with torch.no_grad():
            target._system.model(lq)
        return lq.clone()


class ScoreGcModel(Attack):
    """Score-based, but finds the restorer through the garbage collector and runs it (cheater)."""

    name = "cheat_score_gc_model"
    kind = "score-based"

    def perturb(self, target, lq, hq, budget, generator):
        with torch.no_grad():
            for model in arena_models():
                model(lq)
        return lq.clone()


class ScoreForged(Attack):
    """Score-based, but takes white-box gradients of target._system.model while forging the
    oracle's bookkeeping (``inside`` and ``model_rows``) so the watch sees nothing (cheater)."""

    name = "cheat_score_forged"
    kind = "score-based"

    def perturb(self, target, lq, hq, budget, generator):
        x = lq.clone().requires_grad_(True)
        target.inside = True
        try:
            out = target._system.model(x)
        finally:
            target.inside = False
        target.model_rows += x.shape[0]
        (grad,) = torch.autograd.grad((out - hq).pow(2).sum(), x)
        return fgsm_step(lq, grad, budget.eps)


class HookRemover(Attack):
    """Score-based, but removes the arena's forward hooks, then takes white-box gradients of
    the restorer (cheater)."""

    name = "cheat_hook_remover"
    kind = "score-based"

    def perturb(self, target, lq, hq, budget, generator):
        model = target._system.model
        model._forward_pre_hooks.clear()
        hooks = torch.nn.modules.module._global_forward_pre_hooks
        for key in [k for k, fn in hooks.items() if "Watch" in getattr(fn, "__qualname__", "")]:
            del hooks[key]
        x = lq.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((model(x) - hq).pow(2).sum(), x)
        return fgsm_step(lq, grad, budget.eps)


class WhitePrivateModel(Attack):
    """White-box, but also runs the restorer directly, around its counted target (cheater)."""

    name = "cheat_white_private_model"

    def perturb(self, target, lq, hq, budget, generator):
        with torch.no_grad():
            target._system.model(lq)
        _, grad = target.loss_grad(lq, hq)
        return fgsm_step(lq, grad, budget.eps)


class WhiteOverspend(Attack):
    """White-box: 10 x budget.steps gradient calls (cheater)."""

    name = "cheat_white_overspend"

    def perturb(self, target, lq, hq, budget, generator):
        x = lq
        for _ in range(10 * budget.steps):
            _, grad = target.loss_grad(x, hq)
            x = fgsm_step(lq, grad, budget.eps)
        return x


class WhiteResetEvaluations(Attack):
    """White-box: 10 x budget.steps gradient calls, zeroing the oracle's evaluation counter
    before each, where it lives (the public attribute is read-only) (cheater)."""

    name = "cheat_white_reset_evaluations"

    def perturb(self, target, lq, hq, budget, generator):
        x = lq
        for _ in range(10 * budget.steps):
            target._ledger.evaluations = 0
            _, grad = target.loss_grad(x, hq)
            x = fgsm_step(lq, grad, budget.eps)
        return x


class CatchViolation(Attack):
    """White-box: overspends its evaluations, catches the RuleViolation and returns the last
    valid iterate anyway (cheater)."""

    name = "cheat_catch_violation"

    def perturb(self, target, lq, hq, budget, generator):
        x = lq
        try:
            for _ in range(10 * budget.steps):
                _, grad = target.loss_grad(x, hq)
                x = fgsm_step(lq, grad, budget.eps)
        except RuleViolation:
            pass
        return x


class ForgetViolation(Attack):
    """Like cheat_catch_violation, and also clears the oracle's memory of it (cheater)."""

    name = "cheat_forget_violation"

    def perturb(self, target, lq, hq, budget, generator):
        x = lq
        try:
            for _ in range(10 * budget.steps):
                _, grad = target.loss_grad(x, hq)
                x = fgsm_step(lq, grad, budget.eps)
        except RuleViolation:
            target.violation = None
        return x


class CatchFault(Attack):
    """Score-based: queries an input that makes `cheat_fragile` raise, catches the SystemFault
    and returns a result anyway."""

    name = "cheat_catch_fault"
    kind = "score-based"

    def perturb(self, target, lq, hq, budget, generator):
        try:
            target.query(torch.full_like(lq, 0.5))
        except SystemFault:
            pass
        return lq.clone()


class TransferManySurrogates(Attack):
    """Transfer: asks for 10 surrogates, each with a fresh evaluation bound, and spends them all
    (cheater)."""

    name = "cheat_transfer_many"
    kind = "transfer"

    def perturb(self, target, lq, hq, budget, generator):
        x = lq
        for _ in range(10):
            proxy = target.surrogate("tiny")
            for _ in range(budget.steps + 2):
                _, grad = proxy.loss_grad(x, hq)
                x = fgsm_step(lq, grad, budget.eps)
        return x


class ReturnOverBudget(Attack):
    """Returns lq + 3 eps (cheater)."""

    name = "cheat_return_over_budget"

    def perturb(self, target, lq, hq, budget, generator):
        return (lq + 3 * budget.eps).clamp(0, 1)


class ReturnNaN(Attack):
    """Returns NaNs (cheater)."""

    name = "cheat_return_nan"

    def perturb(self, target, lq, hq, budget, generator):
        return torch.full_like(lq, float("nan"))


class ReturnWrongShape(Attack):
    """Returns a batch one column short (cheater)."""

    name = "cheat_return_wrong_shape"

    def perturb(self, target, lq, hq, budget, generator):
        return lq[..., :-1].clone()


class ReturnInt(Attack):
    """Returns an integer tensor (cheater)."""

    name = "cheat_return_int"

    def perturb(self, target, lq, hq, budget, generator):
        return lq.round().to(torch.int64)


class _Liar(torch.Tensor):
    """A tensor whose row-wise maxima are all zero: the norm of any perturbation looks nil."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs or {})
        if func in (torch.Tensor.amax, torch.amax) and isinstance(out, torch.Tensor) and out.ndim == 1:
            return torch.zeros(out.shape, dtype=out.dtype, device=out.device)
        return out


class ReturnLiar(Attack):
    """Returns lq + 0.3 (far outside the budget) as a tensor subclass that lies to the arena's
    norm check (cheater)."""

    name = "cheat_return_liar"

    def perturb(self, target, lq, hq, budget, generator):
        return torch.where(lq > 0.5, lq - 0.3, lq + 0.3).as_subclass(_Liar)


class ManyRounds(Attack):
    """Declares 10**9 rounds to buy a bigger evaluation bound; one honest FGSM step."""

    name = "cheat_many_rounds"

    def rounds(self):
        return 10**9

    def perturb(self, target, lq, hq, budget, generator):
        _, grad = target.loss_grad(lq, hq)
        return fgsm_step(lq, grad, budget.eps)


class Raises(Attack):
    """Raises inside perturb."""

    name = "cheat_raises"

    def perturb(self, target, lq, hq, budget, generator):
        raise RuntimeError("plugin bug")


class RaisesInRounds(Attack):
    """Raises in rounds(), which the arena calls before perturb."""

    name = "cheat_raises_in_rounds"

    def rounds(self):
        raise RuntimeError("plugin bug in rounds")

    def perturb(self, target, lq, hq, budget, generator):
        return lq.clone()


class RaisesInInit(Attack):
    """Raises when the worker builds it (planning only validates its parameters)."""

    name = "cheat_raises_in_init"

    def __init__(self, params=None):
        super().__init__(params)
        raise RuntimeError("plugin bug in __init__")


class RaisesSystemFault(Attack):
    """Raises SystemFault itself, framing the system for its own failure (cheater)."""

    name = "cheat_raises_system_fault"

    def perturb(self, target, lq, hq, budget, generator):
        raise SystemFault("the restorer raised RuntimeError: it was not me")


class Float64Query(Attack):
    """Score-based: queries a float64 batch, which the restorer's float32 weights reject
    (cheater: it makes an honest system fault)."""

    name = "cheat_float64_query"
    kind = "score-based"

    def perturb(self, target, lq, hq, budget, generator):
        try:
            target.query(lq.double())
        except SystemFault:
            pass
        return lq.clone()


class DetachedSteer(Attack):
    """White-box: passes loss_grad a steer whose drive does not depend on x, so the backward
    pass raises (cheater: it makes an honest system fault)."""

    name = "cheat_detached_steer"

    def perturb(self, target, lq, hq, budget, generator):
        def steer(out, ref):
            rank = (out - ref).pow(2).flatten(1).mean(1)
            return rank, torch.zeros(len(out), requires_grad=True)

        try:
            target.loss_grad(lq, hq, steer=steer)
        except SystemFault:
            pass
        return lq.clone()


# ============================================================================================
# Defenses
# ============================================================================================


def _contract(x: torch.Tensor) -> torch.Tensor:
    return x * 0.75 + 0.125


class InPlaceDefense(Defense):
    """Contracts its input towards grey, writing into the tensor it is given (in place)."""

    name = "cheat_inplace_defense"
    gradient = "bpda"

    def purify(self, x, generator):
        x.mul_(0.75).add_(0.125)
        return x


class InPlaceTwin(Defense):
    """cheat_inplace_defense's transform, without the in-place write (honest twin)."""

    name = "honest_inplace_twin"
    gradient = "bpda"

    def purify(self, x, generator):
        return _contract(x)


SNAP_RADIUS = 10 / 255


def snap(memory: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Each row of x close (L-inf) to a remembered image becomes that image; others are
    remembered."""
    rows = []
    for row in x.detach():
        near = next((m for m in memory if m.shape == row.shape and float((m - row).abs().max()) <= SNAP_RADIUS), None)
        if near is None:
            memory.append(row.clone())
            near = row
        rows.append(near)
    return torch.stack(rows).to(x)


class StatefulClass(Defense):
    """Remembers (at class level) every input it saw and snaps near-duplicates back to them:
    adversarial inputs near a clean image it saw come out clean (cheater)."""

    name = "cheat_stateful_class"
    gradient = "bpda"
    memory: ClassVar[list[torch.Tensor]] = []

    def purify(self, x, generator):
        return snap(type(self).memory, x)


class StatefulInstance(Defense):
    """Like cheat_stateful_class, with the memory on the instance (cheater)."""

    name = "cheat_stateful_instance"
    gradient = "bpda"

    def __init__(self, params=None):
        super().__init__(params)
        self.memory: list[torch.Tensor] = []

    def purify(self, x, generator):
        return snap(self.memory, x)


class _RaisingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("no gradient for you")


class _NaNBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class BadBackward(Defense):
    """Identity whose backward raises, declared exact (cheater)."""

    name = "cheat_bad_backward"
    gradient = "exact"

    def purify(self, x, generator):
        return _RaisingBackward.apply(x)


class NaNGradient(Defense):
    """Identity whose backward gives NaN, declared exact (cheater)."""

    name = "cheat_nan_gradient"
    gradient = "exact"

    def purify(self, x, generator):
        return _NaNBackward.apply(x)


class Rounding(Defense):
    """8-bit quantisation declared exact: its gradient is zero, the attack is blind (cheater)."""

    name = "cheat_rounding"
    gradient = "exact"

    def purify(self, x, generator):
        return (x * 255).round() / 255


class UndeclaredRandom(Defense):
    """Fresh noise from its generator, declared random = False (cheater)."""

    name = "cheat_undeclared_random"

    def purify(self, x, generator):
        z = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
        return (x + 0.03 * z).clamp(0, 1)


class GlobalRNG(Defense):
    """Noise from the global RNG, declared random = False (cheater)."""

    name = "cheat_global_rng"

    def purify(self, x, generator):
        return (x + 0.03 * torch.randn_like(x)).clamp(0, 1)


class GlobalRNGDeclared(Defense):
    """Noise from the global RNG, declared random = True (cheater)."""

    name = "cheat_global_rng_declared"
    random = True

    def purify(self, x, generator):
        return (x + 0.03 * torch.randn_like(x)).clamp(0, 1)


class HonestNoise(Defense):
    """Gaussian noise drawn from its generator, declared random = True (honest)."""

    name = "honest_noise"
    random = True

    def purify(self, x, generator):
        z = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
        return (x + 0.03 * z).clamp(0, 1)


class Fragile(Defense):
    """Identity that raises on an all-grey input (a faulty defense, for cheat_catch_fault)."""

    name = "cheat_fragile"

    def purify(self, x, generator):
        if bool((x == 0.5).all()):
            raise ValueError("fragile defense met a grey image")
        return x.clone()


# ============================================================================================
# Restorers
# ============================================================================================


class _NaNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, lq):
        return lq * self.scale * float("nan")


class NaNRestorer(Restorer):
    """Returns NaN everywhere (a broken restorer)."""

    name = "cheat_nan_restorer"

    def build(self):
        return _NaNNet()


def _differentiated(x: torch.Tensor) -> bool:
    """Whether an attack is taking gradients through this call (what a cheater looks for)."""
    return torch.is_grad_enabled() and x.requires_grad


def _squeeze(x: torch.Tensor) -> torch.Tensor:
    return 0.5 + 0.2 * (x - 0.5)


class GradSniffer(Defense):
    """Identity when scored; a contrast squeeze when differentiated, so that every gradient
    attack through it climbs the wrong loss (cheater: another function under gradients)."""

    name = "cheat_grad_sniffer"
    gradient = "exact"

    def purify(self, x, generator):
        return _squeeze(x) if _differentiated(x) else x


class _SniffNet(TinyNet):
    def forward(self, lq):
        if _differentiated(lq):  # attacked: restore a contrast-squeezed input instead
            return super().forward(_squeeze(lq))
        return super().forward(lq)


class GradSnifferRestorer(Restorer):
    """TinyNet that restores another input when differentiated (cheater)."""

    name = "cheat_grad_sniffer_restorer"

    def build(self):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # tiny's weights: honest, it would score as tiny
            return _SniffNet()


class VictimNet(TinyNet):
    """TinyNet under another type, so that a cheater can single out its system."""


class Victim(Restorer):
    """A seeded TinyNet (honest; the victim of cheat_gc_clean_cache)."""

    name = "honest_victim"

    def build(self):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            return VictimNet()


# ============================================================================================
# Registry
# ============================================================================================

ATTACKS = [
    InPlaceInputs, GcData, GcBackups, PrivateWeights, GcWeights, HookModel, SwapModel, GcCleanCache,
    QueryRows, QueryBudget, QueryReset, ScoreForward, ScoreLossGrad, ScoreSystem, KindFlip,
    ScorePrivateModel, ScoreGcModel, ScoreForged, HookRemover, WhitePrivateModel, WhiteOverspend,
    WhiteResetEvaluations, CatchViolation, ForgetViolation, CatchFault, TransferManySurrogates,
    ReturnOverBudget, ReturnNaN, ReturnWrongShape, ReturnInt, ReturnLiar, ManyRounds, Raises,
    RaisesInRounds, RaisesInInit, RaisesSystemFault, Float64Query, DetachedSteer,
]
DEFENSES = [
    InPlaceDefense, InPlaceTwin, StatefulClass, StatefulInstance, BadBackward, NaNGradient, Rounding,
    UndeclaredRandom, GlobalRNG, GlobalRNGDeclared, HonestNoise, Fragile, GradSniffer,
]
RESTORERS = [NaNRestorer, Victim, GradSnifferRestorer]


def plugin_module(*classes: type) -> ModuleType:
    """A plugin module whose hooks register ``classes`` (each under its own role)."""
    classes = classes or (*ATTACKS, *DEFENSES, *RESTORERS)
    mod = ModuleType("adversaries_plugin_" + "_".join(sorted(c.name for c in classes))[:80])
    for hook, base in (("register_attacks", Attack), ("register_defenses", Defense),
                       ("register_restorers", Restorer)):
        mine = [c for c in classes if issubclass(c, base)]

        def register(register, mine=mine):
            for c in mine:
                register(c)

        setattr(mod, hook, hookimpl(register))
    return mod


def registry(*classes: type, modules: tuple[ModuleType, ...] = ()):
    """The built-in plugins, the given adversaries (default: all of them) and ``modules``."""
    return load_registry(modules=(plugin_module(*classes), *modules))
