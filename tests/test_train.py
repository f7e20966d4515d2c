"""The training recipe: the scene pools, held-out validation photographs, pairs rendered on the
device, mixed precision, and the split that must not move (the test split's hash is part of
every stored match key)."""

from __future__ import annotations

import importlib
import importlib.util
import json

import numpy as np
import pytest
import torch

from arena.api import ConfigError
from arena.data import load_data
from arena.plugins import load_registry
from arena.weights import read_manifest

pytestmark = pytest.mark.usefixtures("one_thread")

# The embedded splits as generated before issue 20 added training photographs (commit c680501,
# seed 0): the test split is in every match key, the train split in every hardened weight's.
# The 64 px ones are also in the shipped unet manifest (data_hash, train_data_hashes[0]).
PINNED = {
    ("test", 16): "b836f60ffb74f3f0328eab7d8c1ce1310db4ea66ab0ab673a0388d930f3a06f8",
    ("test", 32): "ddc0ec990d6496068101805295d1274c20de5a5f2a06dc4e238ffd3844e24cbb",
    ("test", 64): "ea45c1ece32177395bf323557e70e4dbcb75112a484108ff27fb32cf92767270",
    ("train", 16): "84664214b5d9668dc584f08a886f9d183d4d1d393a00fc775bdcae193f7918d2",
    ("train", 64): "8cafd51a70e6e50462dd45ab4d9829632dfb7c140341d0301e56d7a4f2188b7e",
}


@pytest.fixture(scope="module")
def registry():
    return load_registry(modules=(importlib.import_module("arena_plugins.restorers.unet"),),
                         entrypoints=False)


@pytest.mark.parametrize("split,size", sorted(PINNED))
def test_the_benchmark_splits_did_not_move(split, size, tmp_path):
    data = load_data("embedded", split, size=size, seed=0, cache_dir=str(tmp_path))
    assert data.hash == PINNED[split, size]


def test_training_photographs_never_meet_the_test_split():
    from arena.data.embedded import PHOTOS, available_photos

    groups = {split: set(PHOTOS[split]) for split in ("train", "extra", "val", "test")}
    for a in groups:
        for b in groups:
            assert a == b or not groups[a] & groups[b], (a, b)
    # the validation photographs need no optional package: checkpoints are always chosen
    assert available_photos("val") == list(PHOTOS["val"])
    val = load_data("embedded", "val", size=16)
    assert {i.split("-c")[0] for i in val.ids} == groups["val"]
    assert len(val) == len(groups["val"]) * 9 * 4  # photos x PSFs x crops


def test_a_missing_optional_package_leaves_the_other_samples_as_they_were(monkeypatch, tmp_path):
    import arena.data.embedded as E

    if any(importlib.util.find_spec(m) is None for m in set(E.OPTIONAL.values())):
        pytest.skip("the scenes extra is not installed here")
    full = E.load_embedded("extra", size=16, cache_dir=str(tmp_path / "a"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sklearn" else real(name, *a))
    assert E.check_embedded() == []  # not installed is not a problem
    # the same cache folder: the file written with every photograph is not served for fewer
    part = E.load_embedded("extra", size=16, cache_dir=str(tmp_path / "a"))
    assert {i.split("-c")[0] for i in part.ids} == {"gravel", "aero", "ascent"}
    keep = [k for k, i in enumerate(full.ids) if i in set(part.ids)]
    assert len(keep) == len(part) and torch.equal(full.subset(keep).lq, part.lq)


def test_reflect_padding_is_numpys_for_any_width():
    from arena.data.augment import reflect_pad

    x = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    for pad in (1, 4, 13):
        want = np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
        assert np.array_equal(reflect_pad(x, pad).numpy(), want)


def test_the_batched_renderer_is_the_numpy_formation_model():
    from arena.data import form_udc
    from arena.data.augment import render

    data = load_data("embedded", "test", images=9, size=16)
    x = np.random.default_rng(0).uniform(0, 3, size=(2, 3, 16 + 62, 16 + 62))
    lq, hq = render(torch.from_numpy(x).float(), data.psf[:2].float(),
                    torch.full((2,), 1e12), torch.zeros(2), torch.Generator().manual_seed(0))
    for i in range(2):  # with the noise made negligible, the same images as the numpy model
        want_lq, want_hq = form_udc(x[i], data.psf[i].double().numpy(), noise=False, margin=31)
        assert np.abs(lq[i].numpy() - want_lq).max() < 2e-4
        assert np.abs(hq[i].numpy() - want_hq).max() < 1e-6
    # and with noise, its variance is Poisson's plus the read noise's (flat grey scene)
    flat = torch.full((1, 3, 64 + 62, 64 + 62), 0.5)
    psf = data.psf[:1].float()
    y = torch.stack([render(flat, psf, torch.tensor([400.0]), torch.tensor([0.004]),
                            torch.Generator().manual_seed(s))[0] for s in range(4)])
    signal = 0.25 * y / (1 - y)  # φ⁻¹ of lq: the linear signal (0.5 is below saturation)
    var = float(signal[..., 8:-8, 8:-8].var())
    assert abs(var / (0.5 / 400 + 0.004 ** 2) - 1) < 0.1


@pytest.mark.parametrize("source", ["scenes", "pairs"])
def test_fresh_pairs_are_seeded_physical_and_carry_true_codes(source):
    from arena.data.augment import Resynthesis, ScenePool

    train = load_data("embedded", "train", size=16, seed=0)
    synth = ScenePool(("train",), 16, train) if source == "scenes" else Resynthesis(train)
    idx = torch.arange(6)
    lq, hq, code = synth.pairs(idx, torch.Generator().manual_seed(0), 16)
    assert lq.shape == hq.shape == (6, 3, 16, 16) and lq.dtype == torch.float32
    assert 0 <= float(lq.min()) and float(lq.max()) < 1 and not torch.equal(lq, hq)
    again = synth.pairs(idx, torch.Generator().manual_seed(0), 16)
    other = synth.pairs(idx, torch.Generator().manual_seed(1), 16)
    assert torch.equal(lq, again[0]) and torch.equal(hq, again[1]) and torch.equal(code, again[2])
    assert not torch.equal(hq, other[1])
    assert all(any(torch.equal(c, b) for b in synth.codes) for c in code)
    assert not any(torch.equal(h, s) for h in hq for s in train.hq)  # new images, not stored ones


def test_the_scene_pool_cuts_crops_larger_than_the_stored_pairs():
    from arena.data.augment import ScenePool, make_batch

    train = load_data("embedded", "train", size=16, seed=0)
    pool = ScenePool(("train", "extra"), 32, train)
    assert pool.max_crop == 160 - 62  # photographs at 5x the 32 px test side, less the context
    g = torch.Generator().manual_seed(0)
    lq, hq, code = make_batch(train, 3, 96, g, True, False, pool, 1.0)
    assert lq.shape == (3, 3, 96, 96) and code.shape == (3, 5)
    with pytest.raises(ConfigError, match="larger than the training photographs allow"):
        pool.check_crop(99)


def test_mixed_precision_is_off_on_the_cpu_unless_asked():
    from arena.train import amp_dtype

    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu) is None and amp_dtype("off", cpu) is None
    assert amp_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        amp_dtype("fp16", cpu)
    with pytest.raises(ConfigError, match="amp must be one of"):
        amp_dtype("fp8", cpu)


def _run(registry, tmp_path, **kw):
    from arena.train import train_restorer

    options = dict(size=16, batch=2, data_seeds=1, params={"width": 4, "levels": 2}, val_every=3,
                   progress=False, registry=registry, work_dir=tmp_path / "work")
    return train_restorer("unet", 6, tmp_path / "out", **{**options, **kw})


def test_checkpoints_are_chosen_on_held_out_photographs_before_the_test_split_is_read(
        registry, tmp_path, monkeypatch):
    import arena.data as data_mod
    import arena.train as train_mod
    from safetensors.torch import load_file

    events = []
    real_load, real_score = data_mod.load_embedded, train_mod.score

    def load(split, **kw):
        events.append(("load", split))
        return real_load(split, **kw)

    def score(model, data, *a):
        events.append(("score", sorted({i.split("-c")[0] for i in data.ids})))
        return real_score(model, data, *a)

    monkeypatch.setattr(data_mod, "load_embedded", load)
    monkeypatch.setattr(train_mod, "score", score)
    path = _run(registry, tmp_path)
    first_test = events.index(("load", "test"))
    assert first_test == len(events) - 2 and events[-1][0] == "score"  # read once, at the end
    scored = [e[1] for e in events[:first_test] if e[0] == "score"]
    assert scored == [["brick", "grace_hopper"]] * 2  # steps 3 and 6, the val photographs

    m = read_manifest(path)
    assert m["val"]["photos"] == ["brick", "grace_hopper"] and m["val"]["images"] == 72
    curve = m["val"]["curve"]
    assert [s for s, _ in curve] == [3, 6]
    best_step, best = max(curve, key=lambda c: c[1])
    assert m["val"]["best_step"] == best_step and abs(m["val"]["best_psnr"] - best) < 1e-3
    assert not set(m["scenes"]["photos"]) & {"brick", "grace_hopper", "coffee", "rocket", "hubble"}
    if importlib.util.find_spec("sklearn"):
        assert {"china", "gravel"} <= set(m["scenes"]["photos"])
    # the shipped file is the best checkpoint, not the last one, where they differ
    last = load_file(str(tmp_path / "work" / "last.safetensors"))
    shipped = load_file(str(path))
    same = all(torch.equal(shipped[k], last[f"model.{k}"]) for k in shipped)
    assert same == (best_step == 6)


def test_the_old_scene_pool_trains_on_the_nine_photographs(registry, tmp_path):
    m = read_manifest(_run(registry, tmp_path, scenes="train"))
    assert m["scenes"] == {"pool": "train", "photos": sorted(
        ["astronaut", "chelsea", "immunohistochemistry", "retina", "motorcycle", "camera",
         "moon", "coins", "grass"])}
    assert m["resynthesis"]["source"] == "ScenePool" and m["amp"] is None


def test_large_crops_need_every_pair_fresh(registry, tmp_path):
    with pytest.raises(ConfigError, match="needs every pair fresh"):
        _run(registry, tmp_path, crop=24)
    m = read_manifest(_run(registry, tmp_path, crop=18, synth_share=1.0))
    assert m["config"]["crop"] == 18 and m["test"]["size"] == 16


def test_a_time_limit_stops_early_and_says_so(registry, tmp_path):
    m = read_manifest(_run(registry, tmp_path, time_limit=1e-9))
    assert m["steps"] == 1 and m["stopped_early"]["at"] == 1
    assert m["val"]["curve"][-1][0] == 1


def test_training_is_repeatable_under_a_seed(registry, tmp_path):
    from safetensors.torch import load_file

    a = load_file(str(_run(registry, tmp_path / "a")))
    b = load_file(str(_run(registry, tmp_path / "b")))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = load_file(str(_run(registry, tmp_path / "c", seed=1)))
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_the_manifest_is_json_and_names_its_device(registry, tmp_path):
    path = _run(registry, tmp_path)
    m = json.loads(path.with_suffix(".json").read_text())
    assert m["device"].startswith("cpu:") and m["config"]["amp"] == "auto"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_pairs_are_rendered_there_and_autocast_is_on(registry, tmp_path):
    from arena.data.augment import ScenePool

    train = load_data("embedded", "train", size=16, seed=0)
    pool = ScenePool(("train",), 16, train, "cuda")
    lq, hq, _ = pool.pairs(torch.arange(4), torch.Generator().manual_seed(0), 16)
    again = pool.pairs(torch.arange(4), torch.Generator().manual_seed(0), 16)
    assert lq.is_cuda and torch.equal(lq, again[0]) and torch.equal(hq, again[1])
    m = read_manifest(_run(registry, tmp_path, device="cuda", crop=18, synth_share=1.0))
    assert m["device"].startswith("cuda:") and m["amp"] in ("bfloat16", "float16")
    assert len(m["val"]["curve"]) == 2 and m["clean_psnr"] > 0
