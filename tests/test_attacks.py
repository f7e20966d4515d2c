"""The attack suite: conformance of every attack, then behaviour on a small trained restorer."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from _attack_checks import GaussianNoise, check_attack_more
from arena.api import Attack, ConfigError
from arena.metrics import psnr
from arena.plugins import load_registry
from arena.testing import TinyNet
from arena.threat import Budget, System, Target, make_target, objective_loss, verify
from arena.weights import load_weights, save_weights
from arena_plugins.defenses.jpeg import JPEG

ATTACKS = ("fgsm", "pgd", "bim", "mifgsm", "apgd", "cw", "cospgd", "ssim", "lpips",
           "simba", "square", "transfer", "noise", "art")
KINDS = {"simba": "score-based", "square": "score-based", "noise": "decision-free",
         "transfer": "transfer"}
#: Parameters that keep the conformance runs short without skipping any code path.
QUICK = {"cw": {"binary_steps": 2}, "pgd": {"restarts": 2}, "apgd": {"restarts": 2}}
#: Start at the clean input (the attacks that start elsewhere by default).
CLEAN = {"cospgd": {"random_start": False}}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def registry():
    modules = tuple(importlib.import_module(f"arena_plugins.attacks.{n}") for n in ATTACKS)
    return load_registry(modules=modules, entrypoints=False)


def make(registry, name, **params):
    return registry.create("attack", name, params)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- conformance ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in ATTACKS if n != "lpips"])
def test_attack_conforms(registry, name):
    entry = registry.get("attack", name)
    assert entry.cls.kind == KINDS.get(name, "white-box")
    assert entry.cls.summary() and "(" in entry.cls.summary(), "docstring must name its paper"
    assert check_attack_more(entry.cls, QUICK.get(name)) == []


class Overreach(Attack):
    """Breaks its budget (test fixture)."""

    name = "overreach"

    def perturb(self, target, lq, hq, budget, generator):
        target.loss_grad(lq, hq)
        return (lq + 2 * budget.eps).clamp(0, 1)


class Greedy(Attack):
    """Queries past its budget (test fixture)."""

    name = "greedy"
    kind = "score-based"

    def perturb(self, target, lq, hq, budget, generator):
        for _ in range(budget.queries + 1):
            target.query(lq, hq)
        return lq


class Unseeded(Attack):
    """Draws from the global RNG instead of its generator (test fixture)."""

    name = "unseeded"
    kind = "decision-free"

    def perturb(self, target, lq, hq, budget, generator):
        return self.project(lq + budget.eps * torch.randn_like(lq).sign(), lq, budget)


@pytest.mark.parametrize("cls,symptom", [(Overreach, "exceeds eps"), (Greedy, "queries"),
                                         (Unseeded, "differ")])
def test_the_checks_catch_a_broken_attack(cls, symptom):
    problems = check_attack_more(cls)
    assert any(symptom in p for p in problems), problems


def test_lpips_is_registered_with_a_reason_when_it_cannot_run(registry):
    entry = registry.entries["attack"]["lpips"]
    if entry.unavailable is None:  # lpips and its backbone are installed here: it must conform
        assert check_attack_more(entry.cls) == []
        return
    assert "lpips" in entry.unavailable.lower()
    with pytest.raises(ConfigError, match="unavailable"):
        registry.get("attack", "lpips")


def test_lpips_attack_plumbing_with_a_stand_in_metric(monkeypatch):
    """The real package and backbone are not here; a stand-in LPIPS exercises everything else."""
    import sys
    import types

    from arena_plugins.attacks.lpips import LPIPSAttack

    class StandIn(torch.nn.Module):
        def __init__(self, net="alex", verbose=True):
            super().__init__()
            torch.manual_seed(0)
            self.features = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, a, b):  # LPIPS's contract: inputs in [-1, 1], (N, 1, 1, 1) out
            d = (self.features(a) - self.features(b)).pow(2).mean((1, 2, 3))
            return d.view(-1, 1, 1, 1)

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=StandIn))
    assert check_attack_more(LPIPSAttack, {"restarts": 2}) == []


def test_parameters_are_validated_with_the_field_named(registry):
    with pytest.raises(ConfigError, match="basis"):
        make(registry, "simba", basis="wavelet")
    with pytest.raises(ConfigError, match="objective"):
        make(registry, "ssim", objective="mse")  # the ssim attack's objective is fixed
    with pytest.raises(ConfigError, match="binary_steps"):
        make(registry, "cw", binary_steps=0)
    assert make(registry, "pgd", step=2.0, restarts=3, random_start=False).params.restarts == 3


# -- a restorer worth attacking ------------------------------------------------------------------

TRAIN_STEPS = 200


def _train(path: Path) -> torch.nn.Module:
    from arena.data.embedded import load_embedded

    torch.manual_seed(0)
    net = TinyNet(12, 4)
    data = load_embedded("train", size=32)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    g = gen(0)
    for _ in range(TRAIN_STEPS):
        idx = torch.randint(0, len(data), (8,), generator=g)
        loss = (net(data.lq[idx]) - data.hq[idx]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_weights(net, path, {"steps": TRAIN_STEPS, "data": data.hash, "arch": "TinyNet(12, 4)"})
    return net


@pytest.fixture(scope="session")
def trained(request, tmp_path_factory):
    """A tiny CNN trained on the embedded training split at 32 px (cached between sessions)."""
    from arena.data.embedded import load_embedded

    torch.set_num_threads(1)
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    folder = cache.mkdir("arena-attacks") if cache else tmp_path_factory.mktemp("arena-attacks")
    path = Path(folder) / f"tinynet-{TRAIN_STEPS}.safetensors"
    try:
        net = load_weights(TinyNet(12, 4), path)
    except Exception:  # no cache yet, or a stale one: train again
        net = _train(path)
    net.eval().requires_grad_(False)
    data = load_embedded("test", images=8, size=32)
    return net, data.lq, data.hq


def attack_on(trained, attack, budget, *, links=(), threat="oblivious", eot=1, seed=0):
    """Run an attack as a match would; returns (x_adv, target, system)."""
    net, lq, hq = trained
    system = System(net, list(links))
    with torch.no_grad():
        clean = system.restore(lq)
    target = make_target(attack.kind, system, threat, attack.params.objective, gen(seed + 1), eot=eot,
                         clean_out=clean, hq=hq, lq=lq, budget=budget, rounds=attack.rounds(),
                         surrogates=lambda name, params=None: System(net, []))
    x = attack.run(target, lq, hq, budget, gen(seed))
    assert verify(x, lq, budget, target.queries) is None
    return x, target, system


def damage(trained, x, system=None):
    """Mean PSNR drop (dB) of the (defended) system's output, adversarial versus clean."""
    net, lq, hq = trained
    system = system or System(net, [])
    return float((psnr(system(lq, gen(9)), hq) - psnr(system(x, gen(9)), hq)).mean())


def losses(trained, x, objective="mse"):
    net, _, hq = trained
    with torch.no_grad():
        return objective_loss(objective, net(x), hq)


LINF = Budget(norm="linf", eps=4 / 255, steps=20)


def test_trained_restorer_improves_on_its_input(trained):
    net, lq, hq = trained
    assert float(psnr(net(lq), hq).mean()) > float(psnr(lq, hq).mean()) + 0.3


# -- white-box behaviour -------------------------------------------------------------------------


@pytest.mark.parametrize("norm,eps", [("linf", 4 / 255), ("l2", 0.5)])
def test_pgd_matches_fgsm_and_beats_noise_on_a_near_linear_restorer(trained, registry, norm, eps):
    # A small restorer is close to linear over the budget: FGSM's corner is then (nearly) the
    # optimum, and an iterative attack started at the clean input must reach it too.
    budget = Budget(norm=norm, eps=eps, steps=20)
    d = {name: damage(trained, attack_on(trained, make(registry, name, **p), budget)[0])
         for name, p in (("pgd", {"random_start": False}), ("fgsm", {}), ("noise", {"draws": 1}))}
    assert d["pgd"] >= d["fgsm"] - 0.01, d
    assert d["fgsm"] > 5 * max(d["noise"], 0.02), d


@pytest.fixture(scope="module")
def jpeg_adaptive():
    """The zoo's JPEG defense (BPDA) in front of the restorer, attacked adaptively: a system far
    from linear. At quality 75 and eps 8/255 an oblivious attack transfers through it well,
    so this is where adaptive and iterative attacks can show what they add."""
    return [JPEG(JPEG.validate({"quality": 75}))], "adaptive", Budget(eps=8 / 255, steps=20)


def test_pgd_20_beats_fgsm_beats_noise_where_the_system_is_not_linear(trained, registry,
                                                                     jpeg_adaptive):
    links, threat, budget = jpeg_adaptive
    system = System(trained[0], links)
    d = {name: damage(trained, attack_on(trained, make(registry, name, **p), budget,
                                         links=links, threat=threat)[0], system)
         for name, p in (("pgd", {}), ("fgsm", {}), ("noise", {"draws": 1}))}
    assert d["pgd"] > d["fgsm"] > 5 * max(d["noise"], 0.02), d


@pytest.mark.parametrize("name", ["bim", "mifgsm", "apgd", "cospgd"])
def test_iterative_attacks_are_not_weaker_than_fgsm(trained, registry, jpeg_adaptive, name):
    def both(attack, **params):
        plain = damage(trained, attack_on(trained, make(registry, attack, **params), LINF)[0])
        links, threat, budget = jpeg_adaptive
        x = attack_on(trained, make(registry, attack, **params), budget, links=links,
                      threat=threat)[0]
        return plain, damage(trained, x, System(trained[0], links))

    fgsm, ours = both("fgsm"), both(name, **CLEAN.get(name, {}))
    assert ours[0] >= fgsm[0] - 0.01 and ours[1] >= fgsm[1] - 0.01, (ours, fgsm)


def test_apgd_is_not_weaker_than_pgd(trained, registry):
    pgd = damage(trained, attack_on(trained, make(registry, "pgd", random_start=False), LINF)[0])
    assert damage(trained, attack_on(trained, make(registry, "apgd"), LINF)[0]) >= pgd - 0.01


def test_damage_grows_with_eps(trained, registry):
    pgd = make(registry, "pgd")
    d = [damage(trained, attack_on(trained, pgd, Budget(eps=k / 255, steps=10))[0])
         for k in (1, 2, 4, 8)]
    assert all(a < b for a, b in zip(d, d[1:])), d


@pytest.mark.parametrize("norm,eps", [("linf", 2 / 255), ("l2", 0.3)])
def test_restarts_never_make_the_kept_result_worse(trained, registry, norm, eps):
    budget = Budget(norm=norm, eps=eps, steps=5)
    one = losses(trained, attack_on(trained, make(registry, "pgd", restarts=1), budget)[0])
    three = losses(trained, attack_on(trained, make(registry, "pgd", restarts=3), budget)[0])
    assert bool((three >= one).all()), (one, three)


def test_pgd_keeps_the_best_iterate_not_the_last(trained, registry):
    # A step far too large makes iterates bounce; the kept one must still be the best seen.
    budget = Budget(eps=8 / 255, steps=6)
    x, target, _ = attack_on(trained, make(registry, "pgd", step=20.0), budget)
    kept = losses(trained, x)
    assert float(kept.mean()) >= max(target.trace) - 1e-6


@pytest.mark.parametrize("objective", ["mse", "mse_clean", "l1", "ssim"])
def test_each_objective_is_what_pgd_raises(trained, registry, objective):
    net, lq, hq = trained
    x, target, _ = attack_on(trained, make(registry, "pgd", objective=objective), LINF)
    with torch.no_grad():
        ref = net(lq) if objective == "mse_clean" else hq
        before = objective_loss(objective, net(lq), ref)
        after = objective_loss(objective, net(x), ref)
    assert bool((after > before).all())
    assert target.objective == objective


def test_ssim_attack_hurts_ssim_more_than_mse_pgd(trained, registry):
    from arena.metrics import ssim

    _, _, hq = trained
    net = trained[0]
    by_ssim = attack_on(trained, make(registry, "ssim"), LINF)[0]
    by_mse = attack_on(trained, make(registry, "pgd"), LINF)[0]
    assert float(ssim(net(by_ssim), hq).mean()) < float(ssim(net(by_mse), hq).mean())


def test_cw_finds_a_shorter_perturbation_than_its_first_success(trained, registry):
    cw = make(registry, "cw", binary_steps=6, loss_ratio=1.5, lr=0.02)
    big = Budget(norm="l2", eps=60.0, steps=25)  # no projection: C&W's own norm is measured
    x, _, _ = attack_on(trained, cw, big)
    needed = torch.tensor(cw.stats["l2_needed"])
    first = torch.tensor(cw.stats["l2_first_success"])
    ok = needed.isfinite()
    assert int(ok.sum()) >= 6, cw.stats
    assert bool((needed[ok] <= first[ok]).all())
    assert bool((needed[ok] < 0.9 * first[ok]).float().mean() >= 0.5), cw.stats
    _, lq, _ = trained
    norms = (x - lq).flatten(1).norm(dim=1)
    assert torch.allclose(norms[ok], needed[ok], rtol=1e-4)
    clean = losses(trained, lq)
    assert bool((losses(trained, x)[ok] >= 1.5 * clean[ok] * (1 - 1e-4)).all())


def test_cw_result_is_projected_into_a_small_budget(trained, registry):
    budget = Budget(norm="l2", eps=0.1, steps=10)
    x, _, _ = attack_on(trained, make(registry, "cw", binary_steps=2), budget)
    _, lq, _ = trained
    assert float((x - lq).flatten(1).norm(dim=1).max()) <= 0.1 * (1 + 1e-5)


# -- threat models: BPDA and EOT -----------------------------------------------------------------


def test_adaptive_bpda_through_jpeg_beats_oblivious(trained, registry, jpeg_adaptive):
    links, _, budget = jpeg_adaptive
    assert links[0].gradient == "bpda"
    pgd = make(registry, "pgd")
    x_obl, _, system = attack_on(trained, pgd, budget, links=links, threat="oblivious")
    x_ada, target, _ = attack_on(trained, pgd, budget, links=links, threat="adaptive")
    assert target.start_grad["abs_mean"] > 0  # BPDA gives a gradient where JPEG has none
    assert damage(trained, x_ada, system) > damage(trained, x_obl, system)


def test_eot_averages_the_gradient_over_draws():
    class Counting(GaussianNoise):
        calls = 0

        def purify(self, x, generator):
            Counting.calls += 1
            return super().purify(x, generator)

    torch.manual_seed(0)
    net = TinyNet().eval().requires_grad_(False)
    x = torch.rand(2, 3, 16, 16, generator=gen(3))
    hq = torch.rand(2, 3, 16, 16, generator=gen(4))
    system = System(net, [Counting()])
    target = Target(system, "adaptive", "mse", gen(5), eot=4)
    loss, grad = target.loss_grad(x, hq)
    assert Counting.calls == 4
    replay, grads, ls = gen(5), [], []
    for _ in range(4):  # the same four draws, by hand
        xi = x.clone().requires_grad_(True)
        li = objective_loss("mse", net(Counting().purify(xi, replay)), hq)
        grads.append(torch.autograd.grad(li.sum(), xi)[0])
        ls.append(li.detach())
    assert torch.allclose(grad, torch.stack(grads).mean(0), atol=1e-7)
    assert torch.allclose(loss, torch.stack(ls).mean(0), atol=1e-7)
    assert not torch.allclose(grads[0], grads[1])  # the draws really differ
    # Oblivious targets and deterministic systems take a single draw.
    assert Target(system, "oblivious", "mse", gen(5), eot=4).eot == 1
    assert Target(System(net, []), "adaptive", "mse", gen(5), eot=4).eot == 1


# -- score-based: query accounting ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["simba", "square"])
@pytest.mark.parametrize("queries", [1, 2, 7, 60])
def test_score_based_attacks_keep_to_the_query_budget(trained, registry, name, queries):
    budget = Budget(norm="linf", eps=4 / 255, queries=queries)
    x, target, _ = attack_on(trained, make(registry, name), budget)
    used = int(target.queries.max())
    assert used <= queries
    assert used >= queries - 1  # it spends what it is given (a SimBA pair may leave one)
    if name == "simba":  # it only ever accepts a step that raises the loss
        _, lq, _ = trained
        assert bool((losses(trained, x) >= losses(trained, lq)).all())


@pytest.mark.parametrize("basis", ["pixel", "dct"])
def test_simba_raises_the_loss_within_its_budget(trained, registry, basis):
    budget = Budget(norm="l2", eps=1.0, queries=300)
    simba = make(registry, "simba", basis=basis, step=0.2)
    x, target, _ = attack_on(trained, simba, budget)
    _, lq, _ = trained
    assert int(target.queries.max()) <= 300
    assert bool((losses(trained, x) > losses(trained, lq)).all())


def test_simba_dct_directions_are_orthonormal(registry):
    simba = make(registry, "simba", basis="dct")
    from arena_plugins.attacks.simba import dct_matrix

    shape = (1, 3, 6, 5)
    dct = (dct_matrix(6), dct_matrix(5))
    rows = torch.arange(1)
    basis = torch.stack([simba.direction(torch.tensor([i]), shape, rows, dct).flatten()
                         for i in range(90)])
    assert torch.allclose(basis @ basis.T, torch.eye(90), atol=1e-5)


def test_square_beats_noise_with_queries(trained, registry):
    budget = Budget(norm="linf", eps=4 / 255, queries=200)
    square = damage(trained, attack_on(trained, make(registry, "square"), budget)[0])
    noise = damage(trained, attack_on(trained, make(registry, "noise", draws=1), budget)[0])
    assert square > noise


def test_noise_keeps_the_worst_draw_and_counts_it(trained, registry):
    budget = Budget(norm="linf", eps=4 / 255, queries=5)
    one, t1, _ = attack_on(trained, make(registry, "noise", draws=1), budget)
    many, t8, _ = attack_on(trained, make(registry, "noise", draws=8), budget)
    assert t1.queries is None  # a single draw needs no query
    assert int(t8.queries.max()) == 5  # eight draws asked, five allowed
    assert bool((losses(trained, many) >= losses(trained, one)).all())


# -- transfer and the ART cross-check ------------------------------------------------------------


def test_transfer_from_the_target_itself_is_white_box_pgd(trained, registry):
    pgd, _, _ = attack_on(trained, make(registry, "pgd"), LINF)
    transfer, target, _ = attack_on(trained, make(registry, "transfer", surrogate="tiny"), LINF)
    assert torch.equal(pgd, transfer)
    assert target.gradient_calls == 0  # it never touched the target's gradients


def test_transfer_without_a_surrogate_says_why(trained, registry):
    net, lq, hq = trained
    target = Target(System(net, []), "oblivious", "mse", gen(1))
    with pytest.raises(AttributeError, match="surrogate"):
        make(registry, "transfer").run(target, lq, hq, LINF, gen(0))


def test_transfer_from_another_restorer_does_damage(trained, registry):
    torch.manual_seed(1)
    other = TinyNet(12, 4).eval().requires_grad_(False)
    net, lq, hq = trained
    system = System(net, [])
    target = make_target("transfer", system, "oblivious", "mse", gen(1), eot=1, clean_out=None, hq=hq,
                         lq=lq, budget=LINF, rounds=1, surrogates=lambda name, params=None: System(other, []))
    x = make(registry, "transfer").run(target, lq, hq, LINF, gen(0))
    assert verify(x, lq, LINF, target.queries) is None
    assert damage(trained, x) > 0


@pytest.mark.parametrize("norm,eps", [("linf", 4 / 255), ("l2", 0.5)])
def test_arena_pgd_at_least_as_strong_as_art_pgd(trained, registry, norm, eps):
    budget = Budget(norm=norm, eps=eps, steps=10)
    art = damage(trained, attack_on(trained, make(registry, "art", method="pgd"), budget)[0])
    ours = damage(trained, attack_on(trained, make(registry, "pgd"), budget)[0])
    assert art > 0.3, "ART did nothing: is y passed explicitly?"
    assert ours >= art - 0.1, (ours, art)


def test_art_fgsm_matches_arena_fgsm(trained, registry):
    for budget in (Budget(norm="linf", eps=4 / 255), Budget(norm="l2", eps=0.5)):
        art, target, _ = attack_on(trained, make(registry, "art", method="fgsm"), budget)
        ours, _, _ = attack_on(trained, make(registry, "fgsm"), budget)
        assert target.gradient_calls == 1 and target.start_grad["abs_mean"] > 0
        assert torch.allclose(art, ours, atol=1e-5), float((art - ours).abs().max())
