"""Tiled restoration (arena.tiling): the same outputs and input gradients as untiled where the
receptive field fits in the blend margin, close where it does not, and memory from a budget."""

import pytest
import torch
from torch import nn

from arena.api import run_restorer
from arena.plan import parse_config, plan
from arena.plugins import load_registry
from arena.tiling import enable, starts, tiled, window


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def image(h=96, w=80, n=2, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def counted(model):
    """Counts calls of the model's first layer: one per tile (and per recomputed tile)."""
    calls = []
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    first.register_forward_hook(lambda *a: calls.append(1))
    return calls


def output_and_grad(fn, x):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    (g,) = torch.autograd.grad((y - 0.5).pow(2).sum(), x)  # an attack's mse-style loss
    return y.detach(), g


class PsfTiny(nn.Module):
    """Two 3x3 convolutions (receptive field radius 2) plus a bias from the PSF's kernel code."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
        self.code = nn.Linear(5, 3)

    def forward(self, lq, code):
        return lq + self.body(lq) + self.code(code)[:, :, None, None]


@pytest.mark.parametrize("size,tile,overlap", [(96, 32, 16), (80, 32, 16), (512, 256, 32), (100, 64, 24)])
def test_tiles_cover_the_image_and_blend_weights_sum_to_one_where_overlaps_are_exact(size, tile, overlap):
    total = torch.zeros(size)
    s = starts(size, tile, overlap)
    assert s[0] == 0 and s[-1] + tile == size
    assert all(b - a <= tile - overlap for a, b in zip(s, s[1:]))  # neighbours share >= overlap
    for i, a in enumerate(s):
        total[a:a + tile] += window(tile, overlap, head=i > 0, tail=i < len(s) - 1)
    assert float(total.min()) >= 1 - 1e-6  # every pixel weighted (the blend divides by total)
    if all(b - a == tile - overlap for a, b in zip(s, s[1:])):
        torch.testing.assert_close(total, torch.ones(size))


def test_tiled_equals_untiled_output_and_gradient_within_the_margin(registry):
    """tiny's receptive field reaches 3 px; 32 px tiles with 16 px overlap leave a 4 px margin."""
    model = registry.create("restorer", "tiny", {"tile": 0}).load()
    x = image()
    y0, g0 = output_and_grad(model, x)
    enable(model, 32, 16)
    calls = counted(model)
    y1, g1 = output_and_grad(model, x)
    assert len(calls) >= 2 * 12  # 4 x 4 tiles... at least 12 forwards plus their recomputation
    # measured: 2e-7 on both (float32 rounding of the blend's division)
    torch.testing.assert_close(y1, y0, rtol=0, atol=1e-5)
    torch.testing.assert_close(g1, g0, rtol=0, atol=1e-5 * float(g0.abs().max()))


def test_a_psf_conditioned_restorer_gets_its_code_in_every_tile():
    model = PsfTiny().eval().requires_grad_(False)
    x, code = image(), torch.rand(2, 5, generator=torch.Generator().manual_seed(3))
    y0, g0 = output_and_grad(lambda t: run_restorer(model, t, code, True), x)
    enable(model, 32, 16)
    y1, g1 = output_and_grad(lambda t: run_restorer(model, t, code, True), x)
    torch.testing.assert_close(y1, y0, rtol=0, atol=1e-5)
    torch.testing.assert_close(g1, g0, rtol=0, atol=1e-5 * float(g0.abs().max()))


def test_wide_receptive_fields_are_close_not_equal(registry):
    """unet sees ~140 px through three poolings: 64 px tiles change its output a little
    (measured 50 dB tiled vs untiled on 96 px test crops); the seams never dominate."""
    from arena.data import load_data

    data = load_data("embedded", "test", size=96, seed=0, images=4)
    model = registry.create("restorer", "unet", {"tile": 0}).load()
    with torch.no_grad():
        a = model(data.lq).clamp(0, 1)
        enable(model, 64, 32)
        b = model(data.lq).clamp(0, 1)
    psnr = 10 * torch.log10(1 / (a - b).pow(2).mean())
    assert 40 < psnr < 90, float(psnr)  # tiled, not bypassed; close


def test_a_memory_budget_chooses_tiles(registry, monkeypatch):
    model = registry.create("restorer", "tiny").load()  # tile unset: the budget decides
    x = image(n=1)
    calls = counted(model)
    with torch.no_grad():
        y0 = model(x)
        untiled = len(calls)
        monkeypatch.setenv("ARENA_TILE_MEMORY_MB", "0.01")  # below one 96 x 80 image's activations
        y1 = model(x)
    assert untiled == 2 and len(calls) - untiled > 1  # the probe plus one forward, then tiles
    torch.testing.assert_close(y1, y0, rtol=0, atol=1e-5)


def test_tile_is_a_restorer_parameter_and_unset_keeps_keys(registry):
    t = parse_config({"restorers": [{"name": "unet", "tile": 256, "overlap": 16}, "nafnet"], "attacks": ["fgsm"]})
    specs = {m.restorer.name: m.restorer for m in plan(t, registry)}
    assert specs["unet"].params["tile"] == 256 and specs["unet"].params["overlap"] == 16
    assert not {"tile", "overlap", "weights"} & set(specs["nafnet"].params)
    model = registry.create("restorer", "unet", specs["unet"].params).load()
    assert (model.arena_tile, model.arena_overlap) == (256, 16)


def test_tiles_smaller_than_the_image_pass_through_unchanged():
    fn = nn.Identity()
    x = image(20, 20)
    assert tiled(fn, x, 32, 8) is not None
    torch.testing.assert_close(tiled(lambda t: t * 2, image(64, 64), 32, 16), image(64, 64) * 2)


def test_embedded_full_gives_whole_photographs_at_the_asked_size():
    from arena.data import load_data
    from arena.metrics import psnr

    a = load_data("embedded-full", "test", size=96, images=6)
    b = load_data("embedded-full", "test", size=96, images=6)
    assert a.lq.shape == (6, 3, 96, 96) and a.psf is not None and a.code.shape[0] == 6
    assert torch.equal(a.lq, b.lq) and a.hash == b.hash  # deterministic per seed
    assert {i.split("-full-")[0] for i in a.ids} == {"coffee", "rocket", "hubble"}
    assert 0 <= float(a.lq.min()) and float(a.lq.max()) <= 1
    assert float(psnr(a.lq, a.hq).mean()) < 35  # degraded, not a copy of the ground truth
    crops = load_data("embedded", "test", size=32, images=2)
    assert crops.name == "embedded" and crops.lq.shape[-1] == 32  # the crops are another dataset
    with pytest.raises(Exception, match="test split only"):
        load_data("embedded-full", "train", size=96)


def test_the_full_resolution_config_plans_tiles(registry):
    from pathlib import Path

    from arena.plan import read_config

    t = read_config(Path(__file__).resolve().parent.parent / "configs" / "full-res.toml")
    assert t.data.name == "embedded-full" and t.data.size >= 256
    for m in plan(t, registry):
        assert m.status == "planned" and m.restorer.params["tile"] < t.data.size
