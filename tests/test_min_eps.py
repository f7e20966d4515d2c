"""`arena min-eps`: per image, the bisection brackets the smallest ε that breaks it.

The analytic cases use the identity restorer on flat grey images, where the MSE-maximising
attack moves every pixel by ε away from the ground truth and the PSNR after it is known in
closed form.
"""

import json
import math

import pytest
import torch
from click.testing import CliRunner

from arena import match as arena_match
from arena.api import ConfigError
from arena.cli import main
from arena.data import UDCData
from arena.min_eps import min_eps, search_spec

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 8


def flat(lq: list[float], hq: list[float]) -> UDCData:
    """Flat images, one per value: ``lq[i]`` everywhere, its ground truth ``hq[i]``."""
    shape = (len(lq), 3, SIZE, SIZE)
    lq_t = torch.tensor(lq).view(-1, 1, 1, 1).expand(shape).contiguous()
    hq_t = torch.tensor(hq).view(-1, 1, 1, 1).expand(shape).contiguous()
    return UDCData(lq_t, hq_t, None, None, [f"flat{i}" for i in range(len(lq))], "flat", "0")


def search(data: UDCData, **raw):
    spec = search_spec(restorer="identity", steps=5, **raw,
                       data={"images": len(data), "size": SIZE})
    return min_eps(spec, device="cpu", data=data)


@pytest.mark.parametrize("norm, hi, true_eps", [
    ("linf", 0.125, 0.1),  # every pixel moved by ε: PSNR = -20 log10 ε, 20 dB at ε = 0.1
    ("l2", 2.0, 0.1 * math.sqrt(3 * SIZE * SIZE)),  # ||δ|| = ε: MSE = ε² / pixels
])
def test_the_bracket_holds_the_analytic_eps(norm, hi, true_eps):
    data = flat([0.5] * 3, [0.5] * 3)  # lq == hq: the gradient is zero there, so start at random
    r = search(data, norm=norm, hi=hi, floor=20, bisections=8, attack_params={"random_start": True})
    for img in r.images:
        assert img.lower <= true_eps <= img.upper, (img.lower, img.upper)
        assert img.upper - img.lower < hi / 2 ** (8 - 1)
        assert img.status == "broken"
        for eps, score in img.probes[1:]:  # the attack reached the corner of every ball it was given
            mse = eps ** 2 if norm == "linf" else eps ** 2 / (3 * SIZE * SIZE)
            assert score == pytest.approx(-10 * math.log10(mse), abs=1e-3)
    assert r.median == pytest.approx(true_eps, abs=hi / 2 ** 8)
    assert r.matches == 1 + 8  # hi, then one match per bisection: every bracket agrees


def test_a_lower_end_is_measured_too():
    """With lo > 0 an image broken at lo is bisected in [0, lo], the others in [lo, hi]."""
    r = search(flat([0.5, 0.5], [0.5, 0.42]), floor=20, lo=0.0625, hi=0.125, bisections=4,
               attack_params={"random_start": True})
    grey, offset = r.images  # broken at ε = 0.1, and at 0.1 - 0.08 = 0.02
    assert 0.0625 <= grey.lower <= 0.1 <= grey.upper and grey.upper - grey.lower == 0.0625 / 2 ** 4
    assert offset.lower <= 0.02 <= offset.upper <= 0.0625 and offset.upper - offset.lower == 0.0625 / 2 ** 4
    assert [e for e, _ in offset.probes[:3]] == [0, 0.125, 0.0625]


def test_relative_floor_under_the_floor_and_never_broken():
    # drop: error d + ε against a clean error d, broken past d (10^0.15 - 1)
    r = search(flat([0.5, 0.5], [0.45, 0.48]), drop=3, hi=0.125, bisections=8)
    for img, d in zip(r.images, (0.05, 0.02)):
        assert img.clean_psnr == pytest.approx(-20 * math.log10(d), abs=1e-3)
        assert img.floor == pytest.approx(img.clean_psnr - 3)
        assert img.lower <= d * (10 ** 0.15 - 1) <= img.upper
        assert img.upper - img.lower < 0.125 / 2 ** 7
    # floor 20 dB (error 0.1): clean error 0.2 is under it; 0.05 breaks at ε = 0.05; 0.03
    # would need 0.07, past hi
    r = search(flat([0.5, 0.5, 0.5], [0.3, 0.45, 0.47]), floor=20, hi=0.06, bisections=6)
    under, broken, never = r.images
    assert (under.lower, under.upper, under.eps, under.status) == (0, 0, 0, "clean under floor")
    assert len(under.probes) == 1  # no attack on an image that is broken already
    assert broken.lower <= 0.05 <= broken.upper and broken.status == "broken"
    assert never.upper == math.inf and never.lower == 0.06 and never.status == "not broken"
    assert r.median == broken.eps
    assert r.median_bracket == (broken.lower, broken.upper)


def test_a_random_defense_is_scored_at_its_worst_draw(monkeypatch):
    """Identity + Gaussian noise (σ = 0.05): broken near ε = sqrt(0.01 - σ²) = 0.087, earlier at
    the worst of 8 draws than at one."""
    data = flat([0.5] * 6, [0.5] * 6)
    raw = dict(defense="noise", floor=20, hi=0.125, bisections=7, eot=1, attack_params={"random_start": True})
    worst = search(data, **raw)
    monkeypatch.setattr(arena_match, "N_EVALUATIONS", 1)
    single = search(data, **raw)
    assert (worst.random, worst.draws, single.draws) == (True, 8, 1)
    for w, s in zip(worst.images, single.images):
        # brackets of 0.125 / 2^7; the two searches group images differently, so each image's
        # noise differs a little between them: two brackets of slack
        assert 0.06 < w.eps <= s.eps + 2 * 0.125 / 2 ** 7 and s.eps < 0.11
    assert sum(w.eps for w in worst.images) < sum(s.eps for s in single.images) - 0.004


def run_cli(*args):
    return CliRunner().invoke(main, ["min-eps", *args], catch_exceptions=False)


def test_the_command_on_the_shipped_unet():
    args = ("--restorer", "unet", "--images", "2", "--size", "16", "--steps", "5", "--bisections", "4")
    res = run_cli(*args, "--format", "json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["images"]) == 2 and out["draws"] == 1 and out["spec"]["drop"] == 3
    for img in out["images"]:
        assert img["floor"] == pytest.approx(img["clean_psnr"] - 3)
        assert 0 <= img["lower"] < img["upper"] <= out["hi"] and img["status"] == "broken"
        assert img["upper"] - img["lower"] <= out["hi"] / 2 ** 4 + 1e-9
    assert out["median_lower"] <= out["median_eps"] <= out["median_upper"]
    res = run_cli(*args)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith("unet + none, adaptive, linf; attack apgd, 5 steps")
    assert all(any(line.startswith(img["image"]) for line in lines) for img in out["images"])
    assert f"median ε: {out['median_eps']:.4g}" in lines[-1]


@pytest.mark.parametrize("args, says", [
    (("--floor", "20", "--drop", "3"), "give a floor (--floor) or a drop (--drop), not both"),
    (("--attack", "square"), "attack 'square' is score-based; the search needs a white-box attack (apgd,"),
    (("--hi", "1/0"), "'hi' value error, must be a number or a fraction like '8/255'"),
    (("--lo", "0.2"), "lo (0.2) must be below hi (0.1255)"),
    (("--bisections", "0"), "'bisections' input should be greater than or equal to 1"),
])
def test_a_bad_argument_is_one_line(args, says):
    res = run_cli("--restorer", "unet", "--images", "1", "--size", "16", *args)
    assert res.exit_code == 1 and res.stdout == ""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("Error: min-eps: ") and says in lines[0], res.output


def test_the_spec_checks_itself_outside_the_cli():
    with pytest.raises(ConfigError, match="unknown parameter 'flor'"):
        search_spec(restorer="unet", flor=20)
    assert search_spec(restorer="unet", hi="8/255").upper == pytest.approx(8 / 255)
