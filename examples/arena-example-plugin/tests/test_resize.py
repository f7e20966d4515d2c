"""Random resizing: the arena's conformance checks, and what it does to images."""

import torch

from arena.testing import check_defense
from arena_example_plugin.resize import RandomResize


def psnr(a, b):
    return 10 * torch.log10(1 / (a - b).pow(2).mean())


def test_conforms():
    assert check_defense(RandomResize) == []
    assert check_defense(RandomResize, {"min_scale": 0.25}) == []


def test_a_factor_of_one_changes_nothing(tiny_images):
    lq, _ = tiny_images
    out = RandomResize(RandomResize.Params(min_scale=1.0)).purify(lq, torch.Generator().manual_seed(0))
    assert torch.allclose(out, lq, atol=1e-6)


def test_it_removes_fine_detail_and_keeps_smooth_content(tiny_images):
    _, smooth = tiny_images  # the ground truth of the tiny batch is a smooth image
    i = torch.arange(16)
    checker = 0.5 + 0.25 * (-1.0) ** (i[:, None] + i[None, :]).expand(2, 3, 16, 16)
    defense = RandomResize(RandomResize.Params(min_scale=0.5))
    g = torch.Generator().manual_seed(0)
    assert defense.purify(checker, g).std() < 0.5 * checker.std()
    assert psnr(defense.purify(smooth, g), smooth) > 25


def test_each_image_draws_its_own_factor(tiny_images):
    lq, _ = tiny_images
    same = lq[:1].expand(2, -1, -1, -1)
    out = RandomResize().purify(same, torch.Generator().manual_seed(0))
    assert not torch.equal(out[0], out[1])
