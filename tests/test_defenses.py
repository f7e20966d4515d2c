"""The defense suite: diffusion purification, fine-tuning, adversarial training, ART transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arena.api import ConfigError
from arena.data import UDCData
from arena_plugins.defenses.purifier import DEFAULT_SCHEDULE, Purifier, alphas_cumprod, reverse_step, timesteps
from arena.metrics import psnr
from arena.testing import TinyNet, check_defense, tiny_batch, tiny_model
from arena.threat import System
from arena.weights import load_weights, save_weights
from arena_plugins.defenses import (advtrain, bitdepth, diffpure, finetune, median, noise, tvm)
from arena_plugins.defenses.diffpure import WEIGHTS, load_purifier

ART_TRANSFORMS = [median.Median, tvm.TVM, bitdepth.BitDepth]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


pytestmark = pytest.mark.usefixtures("one_thread")


# -- the sampler ------------------------------------------------------------------------------


def test_reverse_step_is_diffusers_ddpm_and_ddim_step():
    from diffusers import DDIMScheduler, DDPMScheduler

    x, eps = 1.5 * torch.randn(2, 3, 8, 8, generator=gen(0)), torch.randn(2, 3, 8, 8, generator=gen(1))
    ac = alphas_cumprod(DEFAULT_SCHEDULE)
    ddpm = DDPMScheduler(**DEFAULT_SCHEDULE)
    ddpm.set_timesteps(1000)
    for t in (900, 99, 20, 0):
        ref = ddpm.step(eps, t, x, generator=gen(3)).prev_sample
        z = torch.randn(x.shape, generator=gen(3)) if t > 0 else None
        a_prev = ac[t - 1] if t > 0 else torch.tensor(1.0)
        torch.testing.assert_close(reverse_step(x, eps, ac[t], a_prev, 1.0, z), ref, atol=2e-5, rtol=1e-4)
    ddim = DDIMScheduler(**DEFAULT_SCHEDULE, set_alpha_to_one=True)
    ddim.set_timesteps(50)  # stride 20
    for t in (980, 100, 0):
        ref = ddim.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
        a_prev = ac[t - 20] if t >= 20 else torch.tensor(1.0)
        torch.testing.assert_close(reverse_step(x, eps, ac[t], a_prev, 0.0, None), ref)


def test_timesteps_descend_from_the_start():
    assert timesteps(99, 1000) == list(range(99, -1, -1))
    ts = timesteps(99, 10)
    assert len(ts) == 10 and ts[0] == 99 and ts == sorted(set(ts), reverse=True) and ts[-1] > 0
    assert timesteps(99, 1) == [99]


# -- diffpure ---------------------------------------------------------------------------------


def make_diffpure(**params) -> diffpure.DiffPure:
    return diffpure.DiffPure(diffpure.DiffPure.validate(params))


def test_shipped_purifier_is_small_and_documented():
    assert WEIGHTS.exists(), "run scripts/train_purifier.sh"
    assert WEIGHTS.stat().st_size < 8 * 2**20
    p = load_purifier(None, "cpu")
    assert p.manifest["data"]["name"] == "embedded" and p.manifest["steps"] > 0
    assert sum(t.numel() for t in p.unet.parameters()) == p.manifest["parameters"]


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_diffpure_is_seeded_and_random(sampler):
    lq, _ = tiny_batch()
    d = make_diffpure(sampler=sampler, t_star=0.05)
    a, b, c = d.purify(lq, gen(0)), d.purify(lq, gen(0)), d.purify(lq, gen(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == lq.shape and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1


def test_diffpure_conforms():
    assert check_defense(diffpure.DiffPure, {"t_star": 0.05, "sampler": "ddim", "steps": 3}) == []


def test_grad_modes_share_the_forward_value():
    x = tiny_batch()[0].requires_grad_(True)
    ref = make_diffpure(t_star=0.03).purify(x.detach(), gen(5))
    for mode in ("full", "surrogate", "bpda"):
        y = make_diffpure(t_star=0.03, grad_mode=mode).purify(x, gen(5))
        torch.testing.assert_close(y.detach(), ref)


@pytest.mark.parametrize("mode", ["full", "surrogate", "bpda"])
def test_gradients_are_finite_and_nonzero_in_every_mode(mode):
    x, _ = tiny_batch()
    x.requires_grad_(True)
    w = torch.randn(x.shape, generator=gen(9))
    system = System(torch.nn.Identity(), [make_diffpure(t_star=0.03, grad_mode=mode)])
    (g,) = torch.autograd.grad((system.purify_differentiable(x, gen(0)) * w).sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    if mode == "bpda":
        torch.testing.assert_close(g, w)
    else:  # a real gradient through the denoiser, not the identity
        assert (g - w).abs().mean() > 1e-3 * w.abs().mean()


def test_checkpointed_gradient_equals_the_stored_one_at_a_fraction_of_the_memory():
    p = load_purifier(None, "cpu")
    x = tiny_batch()[0].requires_grad_(True)
    w = torch.randn(x.shape, generator=gen(2))
    grads, saved = [], []
    for ckpt in (False, True):
        stored = [0]

        def pack(t, stored=stored):
            stored[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = p.purify(x, 0.02, "ddpm", generator=gen(4), checkpointed=ckpt)
        grads.append(torch.autograd.grad((y * w).sum(), x)[0])
        saved.append(stored[0])
    torch.testing.assert_close(grads[0], grads[1])
    assert saved[1] < saved[0] / 20  # bytes kept for the backward pass: step inputs only


def test_tiles_cover_large_and_odd_images():
    p = load_purifier(None, "cpu")
    x = torch.rand(1, 3, 30, 70, generator=gen(0))
    y = p.purify(x, 0.05, "ddim", 3, generator=gen(1), tile=32, overlap=8)
    assert y.shape == x.shape and torch.isfinite(y).all()
    # With no tiling needed, the tile setting changes nothing.
    small = torch.rand(1, 3, 16, 16, generator=gen(0))
    torch.testing.assert_close(p.purify(small, 0.05, "ddim", 3, generator=gen(1), tile=16),
                               p.purify(small, 0.05, "ddim", 3, generator=gen(1), tile=64))


def test_bad_diffpure_params_fail_at_validation():
    for bad in ({"t_star": 0.0}, {"t_star": 0.9}, {"sampler": "euler"}, {"grad_mode": "fd"},
                {"tile": 16, "overlap": 16}, {"steps": 0}):
        with pytest.raises(ConfigError):
            diffpure.DiffPure.validate(bad)


@pytest.mark.slow
def test_ddim_few_steps_matches_ddpm_all_steps_on_udc_inputs():
    """Purified PSNR against the clean UDC input at t* = 0.1, same forward draw: DDIM with 10
    steps is within 3 dB of DDPM with all 100, and both beat the noisy start by 5 dB or more.

    Why 3 dB: DDPM draws a sample of the posterior, whose expected squared error is twice that
    of the posterior mean; deterministic DDIM with few steps lands near that mean. So the
    samplers may differ by up to 10 log10(2) = 3 dB without either being wrong (measured with
    the shipped purifier: DDPM 22.4 dB, DDIM-10 24.2 dB, noisy start 16.4 dB).
    """
    from arena.data import load_data

    clean = load_data("embedded", split="test", images=8, size=32, seed=0).lq
    p = load_purifier(None, "cpu")
    start = p.draw_start(clean, gen(0))
    ddpm = p.purify(clean, 0.1, "ddpm", generator=gen(1), start_noise=start)
    ddim = p.purify(clean, 0.1, "ddim", 10, start_noise=start)
    a = p.alphas_cumprod[p.start(0.1)]
    noisy = ((a.sqrt() * (2 * clean - 1) + (1 - a).sqrt() * start + 1) / 2).clamp(0, 1)
    ddpm_db, ddim_db = float(psnr(ddpm, clean).mean()), float(psnr(ddim, clean).mean())
    noisy_db = float(psnr(noisy, clean).mean())
    assert abs(ddpm_db - ddim_db) < 3.0, (ddpm_db, ddim_db)
    assert min(ddpm_db, ddim_db) > noisy_db + 5.0, (ddpm_db, ddim_db, noisy_db)


# -- ART transforms and noise ----------------------------------------------------------------


@pytest.mark.parametrize("cls", ART_TRANSFORMS + [noise.Noise, finetune.FineTune, advtrain.AdvTrain])
def test_transforms_conform(cls):
    assert check_defense(cls) == []


@pytest.mark.parametrize("cls", ART_TRANSFORMS)
def test_art_transform_range_dtype_shape_and_bpda_identity(cls):
    d = cls(cls.validate({}))
    assert d.gradient == "bpda"
    x = torch.rand(2, 3, 17, 23, generator=gen(0))
    y = d.purify(x, gen(0))
    assert y.shape == x.shape and y.dtype == torch.float32
    assert 0 <= float(y.min()) and float(y.max()) <= 1
    assert not torch.equal(y, x)  # it does transform
    x.requires_grad_(True)
    w = torch.randn(x.shape, generator=gen(1))
    out = System(torch.nn.Identity(), [d]).purify_differentiable(x, gen(0))
    torch.testing.assert_close(out.detach(), y)
    (g,) = torch.autograd.grad((out * w).sum(), x)
    torch.testing.assert_close(g, w)


def test_noise_is_differentiable_and_seeded():
    d = noise.Noise(noise.Noise.validate({"sigma": 0.05}))
    x = torch.full((1, 3, 8, 8), 0.5, requires_grad=True)
    y = d.purify(x, gen(0))
    assert torch.equal(y, d.purify(x, gen(0))) and not torch.equal(y, d.purify(x, gen(1)))
    assert 0.02 < float((y - x).detach().std()) < 0.08
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(g, torch.ones_like(g))  # exact: no pixel of 0.5 + noise was clipped


def test_tvm_transposes_for_art_and_restores_numpy_state():
    from art.defences.preprocessor import TotalVarMin

    x = torch.rand(2, 3, 12, 12, generator=gen(0))
    d = tvm.TVM(tvm.TVM.validate({}))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen(7)))
    y = d.purify(x, gen(7))
    assert np.array_equal(np.random.get_state()[1], before)
    art = TotalVarMin(prob=0.3, norm=2, lamb=0.5, max_iter=10, clip_values=(0.0, 1.0))
    np.random.seed(seed)
    ref = art(x.numpy().transpose(0, 2, 3, 1))[0].transpose(0, 3, 1, 2)
    np.testing.assert_allclose(y.numpy(), ref, atol=1e-6)


# -- facts about ART 1.20 that the wrappers rely on (they fail if ART changes) -----------------


def test_art_total_var_min_assumes_channels_last():
    from art.defences.preprocessor import TotalVarMin

    x = np.random.default_rng(0).random((1, 3, 12, 12), dtype=np.float32)
    art = TotalVarMin(max_iter=5, clip_values=(0.0, 1.0))
    np.random.seed(0)
    nchw = art(x)[0]
    np.random.seed(0)
    nhwc = art(x.transpose(0, 2, 3, 1))[0].transpose(0, 3, 1, 2)
    assert nchw.shape == nhwc.shape and not np.allclose(nchw, nhwc, atol=1e-3)


def test_art_feature_squeezing_returns_float64():
    from art.defences.preprocessor import FeatureSqueezing

    out = FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=4)(np.zeros((1, 3, 4, 4), np.float32))[0]
    assert out.dtype == np.float64


def test_art_spatial_smoothing_pytorch_needs_kornia():
    try:
        import kornia  # noqa: F401
    except ImportError:
        from art.defences.preprocessor import SpatialSmoothingPyTorch

        with pytest.raises(ImportError):
            SpatialSmoothingPyTorch(window_size=3, channels_first=True, clip_values=(0.0, 1.0))
    else:
        pytest.skip("kornia is installed here")


def test_art_numpy_preprocessor_with_torch_eot_is_not_supported():
    from art.defences.preprocessor import SpatialSmoothing
    from art.estimators.classification import PyTorchClassifier
    from art.preprocessing.expectation_over_transformation import EoTImageRotationPyTorch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    clf = PyTorchClassifier(
        model, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, 8, 8), nb_classes=2,
        clip_values=(0.0, 1.0),
        preprocessing_defences=[SpatialSmoothing(window_size=3, channels_first=True, clip_values=(0.0, 1.0)),
                                EoTImageRotationPyTorch(nb_samples=2, angles=10.0, clip_values=(0.0, 1.0))])
    with pytest.raises(NotImplementedError):
        clf.predict(np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32))


# -- chains ------------------------------------------------------------------------------------


def test_a_chain_applies_its_links_in_order():
    x, _ = tiny_batch()
    bits = bitdepth.BitDepth(bitdepth.BitDepth.validate({"bits": 3}))
    noisy = noise.Noise(noise.Noise.validate({"sigma": 0.05}))
    forward = System(torch.nn.Identity(), [noisy, bits]).purify(x, gen(0))
    g = gen(0)
    torch.testing.assert_close(forward, bits.purify(noisy.purify(x, g), g))
    assert len(torch.unique(forward)) <= 8  # bit depth came last
    backward = System(torch.nn.Identity(), [bits, noisy]).purify(x, gen(0))
    assert len(torch.unique(backward)) > 8
    # Each link keeps its own rule: exact noise after BPDA bit depth scales nothing, so the
    # gradient is the identity except where noise pushed a pixel out of [0, 1].
    chain = System(torch.nn.Identity(), [bits, noise.Noise(noise.Noise.validate({"sigma": 0.01}))])
    xr = x.clone().requires_grad_(True)
    y = chain.purify_differentiable(xr, gen(0))
    (g,) = torch.autograd.grad(y.sum(), xr)
    inside = (y > 0) & (y < 1)
    assert torch.equal(g[inside], torch.ones_like(g[inside]))
    assert torch.equal(g[~inside], torch.zeros_like(g[~inside]))


def _registry():
    from arena.plugins import load_registry
    from arena_plugins.attacks import fgsm, pgd
    from arena_plugins.defenses import jpeg, none
    from arena_plugins.restorers import tiny, unet

    modules = (tiny, unet, fgsm, pgd, none, jpeg, diffpure, finetune, advtrain, median, tvm,
               bitdepth, noise)
    return load_registry(modules=modules, entrypoints=False)


def test_diffpure_then_finetune_is_a_chain_with_one_hardening_link():
    from arena.plan import parse_config, plan
    from arena.run.harden import hardened_key, hardening_link

    cfg = parse_config({
        "restorers": ["tiny"], "attacks": ["fgsm"],
        "defenses": [{"name": "diffpure>finetune", "diffpure": {"t_star": 0.05},
                      "finetune": {"steps": 3}}, {"name": "finetune", "steps": 3}],
    })
    registry = _registry()
    chained, alone = plan(cfg, registry)
    assert [s.name for s in chained.defense] == ["diffpure", "finetune"]
    assert chained.defense[0].params["t_star"] == 0.05
    link = hardening_link(chained, registry)
    assert link == hardening_link(alone, registry) == chained.defense[1]
    # Same restorer, link and data: the chain and the ablation share one set of hardened weights.
    assert (hardened_key(chained.restorer, link, chained, registry)
            == hardened_key(alone.restorer, link, alone, registry))
    links = [registry.create("defense", s.name, s.params) for s in chained.defense]
    x, _ = tiny_batch()
    purified = System(torch.nn.Identity(), links).purify(x, gen(0))
    torch.testing.assert_close(purified, links[0].purify(x, gen(0)))  # finetune only hardens


def test_the_defenses_config_plans():
    from pathlib import Path

    from arena.plan import plan, read_config

    cfg = read_config(Path(__file__).parents[1] / "configs" / "defenses.toml")
    matches = plan(cfg, _registry())
    labels = {m.defense_label for m in matches}
    assert {"none", "diffpure", "finetune", "diffpure>finetune", "advtrain", "jpeg", "median",
            "tvm", "bitdepth", "noise"} <= labels
    assert {m.threat for m in matches} == {"oblivious", "adaptive"}


# -- hardening ---------------------------------------------------------------------------------


class TinyRestorer:
    """Stands in for an arena Restorer in harden(): only ``needs_psf`` and ``name`` are read."""

    name = "tiny"
    needs_psf = False


def tiny_data(n: int = 8, size: int = 16) -> UDCData:
    lq, hq = tiny_batch((n, 3, size, size), seed=3)
    return UDCData(lq=lq, hq=hq, psf=None, code=None, ids=[str(i) for i in range(n)],
                   name="tiny", version="test")


def _l1(model, x, hq) -> float:
    with torch.no_grad():
        return float((model(x) - hq).abs().mean())


def test_finetune_hardens_and_lowers_the_training_loss(tmp_path):
    data = tiny_data()
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    d = finetune.FineTune(finetune.FineTune.validate(
        {"steps": 40, "lr": 3e-3, "batch": 4, "t_stars": [0.03, 0.05], "purify_steps": 2}))
    state = d.harden(TinyRestorer(), model, data, gen(0))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # untouched
    hardened = TinyNet()
    save_weights(state, tmp_path / "ft.safetensors", {"defense": "finetune"})
    load_weights(hardened, tmp_path / "ft.safetensors").eval()
    p = load_purifier(None, "cpu")
    purified = p.purify(data.lq, 0.05, "ddim", 2, generator=gen(11))
    assert _l1(hardened, purified, data.hq) < 0.8 * _l1(model, purified, data.hq)
    assert np.mean(d.history[-5:]) < np.mean(d.history[:5])


def test_finetune_is_seeded():
    data, model = tiny_data(4), tiny_model()
    d = finetune.FineTune(finetune.FineTune.validate(
        {"steps": 3, "batch": 2, "purify_steps": 1}))
    a, b = d.harden(TinyRestorer(), model, data, gen(1)), d.harden(TinyRestorer(), model, data, gen(1))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_advtrain_hardens_against_pgd_and_lowers_the_training_loss():
    from arena.threat import Budget, Target
    from arena_plugins.attacks.pgd import PGD

    data = tiny_data()
    model = tiny_model()
    d = advtrain.AdvTrain(advtrain.AdvTrain.validate(
        {"steps": 40, "lr": 3e-3, "batch": 4, "attack_steps": 2}))
    state = d.harden(TinyRestorer(), model, data, gen(0))
    hardened = TinyNet()
    hardened.load_state_dict(state)  # strict: every tensor of the architecture, nothing else
    hardened.eval().requires_grad_(False)

    def adversarial_l1(net):
        budget = Budget(eps=8 / 255, steps=5)
        target = Target(System(net, []), "oblivious", "mse", gen(5))
        x_adv = PGD(PGD.Params()).run(target, data.lq, data.hq, budget, gen(6))
        return _l1(net, x_adv, data.hq)

    assert adversarial_l1(hardened) < 0.8 * adversarial_l1(model)
    assert np.mean(d.history[-5:]) < np.mean(d.history[:5])


def test_hardening_a_psf_restorer_without_psf_data_is_a_clear_error():
    class NeedsPSF(TinyRestorer):
        needs_psf = True

    d = advtrain.AdvTrain(advtrain.AdvTrain.validate({"steps": 1}))
    with pytest.raises(ConfigError, match="needs a PSF"):
        d.harden(NeedsPSF(), TinyNet(), tiny_data(2), gen(0))


def test_bad_hardening_params_fail_at_validation():
    for bad in ({"t_stars": []}, {"t_stars": [0.7]}, {"steps": 0}, {"sampler": "x"},
                {"purifier": {}}):
        with pytest.raises(ConfigError):
            finetune.FineTune.validate(bad)
    with pytest.raises(ConfigError):
        advtrain.AdvTrain.validate({"eps": 0})


@pytest.mark.parametrize("cls", [diffpure.DiffPure, finetune.FineTune, advtrain.AdvTrain, median.Median,
                                 tvm.TVM, bitdepth.BitDepth, noise.Noise])
def test_parameters_list_as_plain_data(cls):
    import json

    json.dumps(cls.param_table())  # stored with the entrants; must be JSON
    json.dumps(cls.validate({}).model_dump(mode="json"))
    assert cls.summary() and cls.name == cls.name.lower()
