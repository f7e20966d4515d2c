"""The restorer zoo: architecture contracts, training recipe, shipped weights and their checks."""

from __future__ import annotations

import importlib
import shutil

import pytest
import torch

from arena.data import load_data
from arena.plugins import load_registry
from arena.testing import check_restorer
from arena.weights import WeightsError, read_manifest, save_weights

FAMILIES = ["unet", "discnet", "nafnet", "uformer", "udcunet"]
CODE_DIM = 5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def registry():
    modules = tuple(importlib.import_module(f"arena_plugins.restorers.{n}") for n in FAMILIES)
    return load_registry(modules=modules, entrypoints=False)


def restorer_cls(registry, name):
    return registry.get("restorer", name).cls


def call(model, cls, lq, code=None):
    if cls.needs_psf:
        code = code if code is not None else torch.randn(lq.shape[0], CODE_DIM)
        return model(lq, code)
    return model(lq)


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter: zero-initialised tails and gates make a fresh net the identity,
    which would let the skip path alone pass the gradient checks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def shipped(cls):
    if not cls.weights.exists():
        pytest.skip(f"no shipped weights for {cls.name} (run scripts/train_zoo.sh)")
    return cls.weights


# -- architecture contracts --------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_conformance(registry, name):
    assert check_restorer(restorer_cls(registry, name), weights=False) == []


@pytest.mark.parametrize("name", FAMILIES)
def test_contract(registry, name):
    cls = restorer_cls(registry, name)
    assert cls.name == name and cls.summary()
    assert cls.weights.name == f"{name}.safetensors"
    model = cls().build()
    assert sum(p.numel() for p in model.parameters()) < 2_000_000


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("shape", [(1, 3, 33, 47), (2, 3, 16, 24), (1, 3, 70, 9)])
def test_any_size(registry, name, shape):
    torch.manual_seed(0)
    cls = restorer_cls(registry, name)
    model = randomized(cls().build()).eval()
    lq = torch.rand(shape)
    with torch.no_grad():
        out = call(model, cls, lq)
        again = call(model, cls, lq, code=torch.zeros(shape[0], CODE_DIM))
    assert out.shape == lq.shape
    assert torch.isfinite(out).all()
    if not cls.needs_psf:
        assert torch.equal(out, again)


@pytest.mark.parametrize("name", FAMILIES)
def test_gradient_reaches_input_through_the_network(registry, name):
    torch.manual_seed(0)
    cls = restorer_cls(registry, name)
    model = randomized(cls().build()).eval()
    x = torch.rand(2, 3, 24, 40, requires_grad=True)
    residual = call(model, cls, x, code=torch.randn(2, CODE_DIM)) - x
    (g,) = torch.autograd.grad(residual.square().sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("name", FAMILIES)
def test_fresh_model_is_identity_and_padding_does_not_leak(registry, name):
    cls = restorer_cls(registry, name)
    model = cls().build().eval()
    lq = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        out = call(model, cls, lq)
    # Zero-initialised residual heads: training starts at the input's PSNR, not below it.
    torch.testing.assert_close(out, lq)


@pytest.mark.parametrize("name", FAMILIES)
def test_eval_is_deterministic_and_batch_independent(registry, name):
    cls = restorer_cls(registry, name)
    model = randomized(cls().build()).eval()
    lq, code = torch.rand(3, 3, 32, 32), torch.randn(3, CODE_DIM)
    with torch.no_grad():
        a = call(model, cls, lq, code)
        b = call(model, cls, lq, code)
        one = call(model, cls, lq[1:2], code[1:2])
    assert torch.equal(a, b)
    torch.testing.assert_close(one, a[1:2], atol=1e-5, rtol=1e-4)


def test_discnet_uses_the_kernel_code(registry):
    cls = restorer_cls(registry, "discnet")
    model = randomized(cls().build()).eval()
    lq = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = model(lq, torch.zeros(1, CODE_DIM))
        b = model(lq, torch.ones(1, CODE_DIM))
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="kernel code"):
        model(lq, torch.zeros(1, CODE_DIM + 1))


def test_params_are_bounded(registry):
    from arena.api import ConfigError

    with pytest.raises(ConfigError, match="width"):
        restorer_cls(registry, "unet").validate({"width": 1000})
    with pytest.raises(ConfigError, match="unknown parameter"):
        restorer_cls(registry, "nafnet").validate({"depth": 3})
    with pytest.raises(ConfigError, match="kernel"):
        restorer_cls(registry, "discnet").validate({"kernel": 4})


# -- training ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_a_few_steps_lower_the_loss(registry, name):
    torch.manual_seed(0)
    cls = restorer_cls(registry, name)
    data = load_data("embedded", "test", images=4, size=32)
    model = cls().build().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        loss = torch.nn.functional.l1_loss(call(model, cls, data.lq, data.code), data.hq)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.95 * losses[0], losses


def test_augmentation_keeps_pairs_aligned_and_psf_codes_true():
    from arena.data.augment import augment, psf_invariant_rot180, random_crop

    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 12, 12)
    a, b = augment(x, x.clone(), g, dihedral=True, rot180=False)
    assert torch.equal(a, b) and not torch.equal(a, x)
    a, _ = augment(x, x, g, dihedral=False, rot180=True)
    for i in range(len(x)):  # only the identity and the half turn, never a flip
        assert torch.equal(a[i], x[i]) or torch.equal(a[i], x[i].flip(-1, -2))
    a, b = random_crop(x, x.clone(), 8, g)
    assert a.shape == (16, 3, 8, 8) and torch.equal(a, b)

    data = load_data("embedded", "test", images=9, size=16)
    assert psf_invariant_rot180(data)  # diffraction PSFs of a real pupil are point-symmetric
    data.psf = data.psf.flip(-1) + torch.rand_like(data.psf) * 1e-2
    assert not psf_invariant_rot180(data)


def test_dead_leaves_scenes_are_seeded_hdr_and_varied():
    import numpy as np

    from arena.data.scenes import dead_leaves

    a = dead_leaves(np.random.default_rng(3), 32, margin=31)
    assert a.shape == (3, 94, 94) and np.isfinite(a).all() and a.min() >= 0
    assert np.array_equal(a, dead_leaves(np.random.default_rng(3), 32, margin=31))
    scenes = [dead_leaves(np.random.default_rng(s), 32) for s in range(40)]
    peaks = np.array([s.max() for s in scenes])
    assert (peaks > 4).mean() > 0.5  # most scenes hold light sources far above saturation
    assert (peaks <= 1).mean() > 0.05  # and some hold none
    # Occluding disks: many distinct flat regions, not one background with specks.
    levels = [len(np.unique(s[0].round(6))) for s in scenes]
    assert np.median(levels) > 20
    medians = np.array([np.median(s) for s in scenes])
    assert medians.min() < 0.02 < 0.1 < medians.max()  # dim night scenes and bright day ones


def test_resynthesis_draws_physical_pairs_from_photos_and_dead_leaves():
    from arena.api import ConfigError
    from arena.data.augment import Resynthesis, make_batch

    data = load_data("embedded", "test", images=9, size=16)
    with pytest.raises(ConfigError, match=r"procedural share must be in \[0, 1\]"):
        Resynthesis(data, procedural=1.5)
    for share in (0.0, 1.0):
        synth = Resynthesis(data, procedural=share)
        lq, hq, code = synth.pairs(torch.arange(6), torch.Generator().manual_seed(0))
        assert lq.shape == hq.shape == (6, 3, 16, 16) and code.shape == (6, CODE_DIM)
        assert 0 <= float(lq.min()) and float(lq.max()) < 1 and not torch.equal(lq, hq)
        again = synth.pairs(torch.arange(6), torch.Generator().manual_seed(0))
        assert torch.equal(lq, again[0]) and torch.equal(hq, again[1])
        # Every code is one of the bank's, so PSF-conditioned restorers get the true kernel.
        assert all(any(torch.equal(c, b) for b in synth.codes) for c in code)
    # Procedural scenes are not the stored photographs: none of their targets is a stored one.
    assert not any(torch.equal(h, s) for h in hq for s in data.hq)
    # A batch made only of resynthesised pairs (nothing drawn from the stored ones) works.
    g = torch.Generator().manual_seed(1)
    lq, hq, code = make_batch(data, 4, 16, g, True, False, Resynthesis(data, 0.5), 1.0)
    assert lq.shape == (4, 3, 16, 16) and code.shape == (4, CODE_DIM)


@pytest.mark.parametrize("key", ["synth_share", "procedural"])
def test_training_refuses_a_share_outside_0_1_before_any_work(registry, tmp_path, key):
    from arena.api import ConfigError
    from arena.train import train_restorer

    # synth_share=0 means no Resynthesis is built: the procedural share must still be checked.
    shares = {"synth_share": 0.0, "procedural": 0.0, key: 1.5}
    with pytest.raises(ConfigError, match=rf"^{key} is a share of a batch, in \[0, 1\]; got 1.5$"):
        train_restorer("unet", 5, tmp_path / "out", registry=registry, work_dir=tmp_path / "w",
                       progress=False, **shares)
    assert not (tmp_path / "out").exists() and not (tmp_path / "w").exists()


def test_zoo_table_scores_the_shipped_weights_now(registry):
    from arena.zoo import zoo_table

    table = zoo_table(["nafnet"], registry=registry)
    m = read_manifest(shipped(restorer_cls(registry, "nafnet")))
    row = next(line for line in table.splitlines() if line.startswith("| nafnet |"))
    measured = float(row.split("|")[3])
    assert abs(measured - m["clean_psnr"]) < 0.05 and "!" not in row
    assert f"{m['input_psnr']:.2f} dB" in table.splitlines()[0]


def test_lr_schedule_warms_up_then_decays():
    from arena.train import lr_factor

    f = [lr_factor(s, 100, 10) for s in range(100)]
    assert f[0] < f[5] < f[9] == 1.0
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 0.05


def _tiny_run(registry, out, work, **kw):
    from arena.train import train_restorer

    return train_restorer("unet", 6, out, size=16, batch=2, registry=registry, work_dir=work,
                          progress=False, data_seeds=1, params={"width": 4, "levels": 2},
                          val_every=3, **kw)


def test_train_writes_weights_and_manifest(registry, tmp_path):
    from arena.zoo import evaluate_restorer

    path = _tiny_run(registry, tmp_path / "out", tmp_path / "work")
    m = read_manifest(path)
    for key in ("config", "seed", "data_version", "data_hash", "steps", "wall_time_s", "device",
                "clean_psnr", "clean_ssim", "input_psnr"):
        assert key in m, key
    assert m["steps"] == 6 and m["config"]["params"] == {"width": 4, "levels": 2}
    again = evaluate_restorer("unet", path, size=16, params={"width": 4, "levels": 2},
                              registry=registry)
    assert abs(again["psnr"] - m["clean_psnr"]) < 1e-3
    assert abs(again["input_psnr"] - m["input_psnr"]) < 1e-6


def test_interrupted_training_resumes_to_the_same_weights(registry, tmp_path, monkeypatch):
    import arena.data.augment as augment
    from safetensors.torch import load_file

    straight = _tiny_run(registry, tmp_path / "a", tmp_path / "wa")

    calls = {"n": 0}
    real_crop = augment.random_crop

    def crash_at_step_5(*args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_crop(*args)

    monkeypatch.setattr(augment, "random_crop", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        _tiny_run(registry, tmp_path / "b", tmp_path / "wb")
    monkeypatch.setattr(augment, "random_crop", real_crop)
    assert read_manifest(tmp_path / "wb" / "last.safetensors")["step"] == 3
    resumed = _tiny_run(registry, tmp_path / "b", tmp_path / "wb")
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


# -- shipped weights -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_shipped_weights_are_small_and_documented(registry, name):
    path = shipped(restorer_cls(registry, name))
    assert path.stat().st_size < 8 * 2**20
    m = read_manifest(path)
    assert m["restorer"] == name and m["data_version"].startswith("embedded")
    # A clear margin over the UDC input on the test split (the README table's gain column).
    assert m["clean_psnr"] > m["input_psnr"] + 1.5, (m["clean_psnr"], m["input_psnr"])


@pytest.mark.parametrize("name", FAMILIES)
def test_shipped_weights_reproduce_their_manifest(registry, name):
    from arena.zoo import evaluate_restorer

    cls = restorer_cls(registry, name)
    m = read_manifest(shipped(cls))
    got = evaluate_restorer(name, size=m["test"]["size"], registry=registry)
    assert abs(got["psnr"] - m["clean_psnr"]) < 0.05
    assert abs(got["ssim"] - m["clean_ssim"]) < 1e-3
    assert abs(got["input_psnr"] - m["input_psnr"]) < 1e-4  # same test data as at training
    # Residual outputs are not clamped (a clamp would zero attack gradients); the arena clamps.
    # What it clamps away must stay small: on average under 2% of the range per pixel.
    model = cls().load()
    data = load_data("embedded", "test", size=m["test"]["size"])
    with torch.no_grad():
        out = call(model, cls, data.lq, data.code)
    assert torch.isfinite(out).all()
    assert (torch.relu(-out) + torch.relu(out - 1)).mean() < 0.02


@pytest.mark.parametrize("name", FAMILIES)
def test_loading_refuses_a_file_that_does_not_match_its_manifest(registry, name, tmp_path):
    cls = restorer_cls(registry, name)
    src = shipped(cls)
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    raw = bytearray(dst.read_bytes())
    raw[-1] ^= 0x01  # one flipped bit in the last tensor's data
    dst.write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match="does not match its manifest"):
        cls().load(weights=dst)


@pytest.mark.parametrize("name", FAMILIES)
def test_loading_refuses_tensors_of_another_architecture(registry, name, tmp_path):
    cls = restorer_cls(registry, name)
    field = "dim" if "dim" in cls.Params.model_fields else "width"
    other = cls({field: cls.Params.model_fields[field].default // 2}).build()
    path = save_weights(other, tmp_path / f"{name}.safetensors", {"restorer": name})
    with pytest.raises(WeightsError, match="do not match the architecture"):
        cls().load(weights=path)
