"""The scene threat model: attacks perturb the HDR scene, the arena renders it (issue 21)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arena.api import ConfigError
from arena.data import UDCData, convolve, load_embedded
from arena.data.formation import TONEMAP_SHIFT as TONEMAP
from arena.data.formation import tonemap, torch_convolve, torch_render
from arena.plan import parse_config, plan
from arena.run.driver import run_tournament
from arena.run.worker import Worker
from arena.store import queries, views
from arena.store.db import open_reader
from arena.threat import SceneRender
from arena_plugins.attacks.pgd import PGD
from adversaries import arena_worker
from helpers import Cheat, db_url, registry_with

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 8 / 255


def _smooth(n: int, side: int, lo: float, hi: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((n, 3, 4, 4), generator=g, dtype=torch.float64)
    img = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    return lo + (hi - lo) * img


def delta_data(scene: torch.Tensor) -> UDCData:
    """A dataset formed with a delta PSF (3x3, context 1) and no sensor noise: lq = φ(C(x))."""
    n, side = scene.shape[0], scene.shape[-1] - 2
    psf = torch.zeros(n, 3, 3, 3)
    psf[..., 1, 1] = 1.0
    core = scene.float().double()[..., 1:-1, 1:-1]
    lq = tonemap(core.clamp(0, 1)).float()
    return UDCData(lq=lq, hq=tonemap(core).float(), psf=psf, code=None, ids=[f"d{i}" for i in range(n)],
                   name="delta", version="test", scene=scene.float(), noise=torch.zeros(n, 3, side, side),
                   photons=torch.full((n,), float("inf")), read_noise=torch.zeros(n))


def run_pair(data: UDCData, attack, registry=None, threats=("oblivious", "scene")):
    t = parse_config({"threat_models": list(threats), "restorers": ["tiny"], "defenses": ["none"],
                      "attacks": [attack], "budgets": [{"eps": EPS, "steps": 5}],
                      "data": {"images": len(data), "size": data.lq.shape[-1]}})
    worker = Worker(data, device="cpu", registry=registry)
    return {m.threat: worker.run(m) for m in plan(t, worker.registry)}


# -- with a delta PSF and no noise, scene is the input-domain threat model up to φ' ---------


def test_delta_psf_without_noise_fgsm_on_the_scene_takes_the_input_domain_direction():
    """y = φ(x + δ): the gradient on the scene is φ'(x) > 0 times the input-domain one, so FGSM
    on the scene adds ε·sign(g) to the radiance exactly where FGSM on the input adds it to lq."""
    data = delta_data(_smooth(2, 18, 0.02, 0.5, seed=1))  # below saturation even at x + ε
    out = run_pair(data, "fgsm")
    obl, scn = out["oblivious"], out["scene"]
    assert obl["status"] == scn["status"] == "done", (obl["reason"], scn["reason"])
    sign = np.sign(obl["adv"] - data.lq.numpy())
    assert (sign != 0).mean() > 0.99
    expected = tonemap((data.scene[..., 1:-1, 1:-1].double() + EPS * torch.from_numpy(sign)).clamp_min(0)).float()
    assert np.abs(scn["adv"] - expected.numpy()).max() < 1e-5
    for a, b in zip(obl["scores"], scn["scores"]):
        assert a["clean_psnr"] == b["clean_psnr"]


def test_the_rendered_perturbation_is_the_tone_curves_slope_times_the_scenes():
    """To first order the UDC input moves by φ'(C(x))·C'(x)·δ: φ'(x)·δ (up to |φ''|·δ²/2 ≤ 16δ²)
    where the sensor does not saturate, 0 where x and x + δ both do."""
    scene = _smooth(1, 18, 0.02, 0.5, seed=2)
    scene[..., 4:10, 4:10] = 3.0  # a lamp, saturated before and after the perturbation
    data = delta_data(scene)
    render = SceneRender(data.scene, data.psf, data.photons, data.read_noise, seed=0)
    u0 = render.start()
    eps = 2 / 255
    sign = torch.randint(0, 2, u0.shape, generator=torch.Generator().manual_seed(3)) * 2.0 - 1
    moved = (render.evaluate(u0 + eps * sign, data.noise) - render.evaluate(u0, data.noise)).double()
    x = data.scene[..., 1:-1, 1:-1].double()
    slope = TONEMAP / (x + TONEMAP) ** 2 * (x < 1)
    first_order = slope * eps * sign[..., 1:-1, 1:-1]
    assert (moved - first_order).abs().max() < 16 * eps ** 2 + 1e-6  # sup |φ''|/2 = 16
    assert moved[x > 1].abs().max() == 0
    assert moved.abs().max() > 3 * eps  # slope ~4 in the dark: the input moves more than the scene
    assert render.evaluate(u0, data.noise).sub(data.lq).abs().max() < 1e-6


# -- the formation model's gradient and its agreement with the numpy one -----------------------


def test_gradient_through_the_formation_model_matches_finite_differences():
    g = torch.Generator().manual_seed(4)
    psf = torch.rand((1, 3, 3, 3), generator=g, dtype=torch.float64)
    psf = psf / psf.sum((-2, -1), keepdim=True)
    scene = _smooth(1, 8, 0.1, 0.9, seed=5)
    scene[..., 3, 3] = 1.6  # a pixel that saturates: clipping passes no gradient there
    noise = 0.01 * torch.randn((1, 3, 6, 6), generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: torch_render(x, psf, noise, margin=1),
                                    (scene.clone().requires_grad_(True),))
    render = SceneRender(scene, psf, torch.tensor([1000.0]), torch.tensor([0.002]), seed=0)
    u = render.start().double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: torch_render(render.scene(v), psf, noise, margin=1), (u,))


@pytest.mark.parametrize("margin", [0, 1, 3])
def test_torch_convolution_equals_the_numpy_one(margin):
    rng = np.random.default_rng(6)
    x = rng.uniform(0, 4, (3, 20, 20))
    psf = rng.uniform(0, 1, (3, 7, 7))
    psf /= psf.sum((-2, -1), keepdims=True)
    ours = torch_convolve(torch.from_numpy(x)[None], torch.from_numpy(psf)[None], margin)[0].numpy()
    assert np.abs(ours - convolve(x, psf, margin)).max() < 1e-10


def test_the_embedded_scenes_render_to_their_lq_and_hq():
    d = load_embedded("test", images=3, size=16)
    m = (d.scene.shape[-1] - 16) // 2
    assert torch.allclose(torch_render(d.scene.double(), d.psf.double(), d.noise.double(), margin=m).float(),
                          d.lq, atol=1e-5)
    assert torch.allclose(tonemap(d.scene[..., m:-m, m:-m]), d.hq, atol=1e-6)
    assert load_embedded("train", images=2, size=16).scene is None  # kept for the test split only


# -- the noise draws are the arena's -----------------------------------------------------------


class Reseeder(PGD):
    """PGD that first tries to choose the sensor noise: it seeds torch's global generator, the
    target's ``generator`` and its own."""

    name = "reseeder"

    def perturb(self, target, lq, hq, budget, generator):
        torch.manual_seed(0)
        target.generator.manual_seed(0)
        generator.manual_seed(0)
        return super().perturb(target, lq, hq, budget, generator)


class FixedPattern(PGD):
    """Returns a fixed perturbation of the scene; with ``meddle`` it first reseeds every
    generator it can reach in its target, private ones included, and renders many times."""

    name = "fixedpattern"

    class Params(PGD.Params):
        meddle: bool = False

    def perturb(self, target, lq, hq, budget, generator):
        if self.params.meddle:
            torch.manual_seed(1)
            for obj in (target, *vars(target).values()):
                for v in getattr(obj, "__dict__", {}).values():
                    if isinstance(v, torch.Generator):
                        v.manual_seed(1)
            for _ in range(3):
                target.loss(lq)
        return pattern(lq)


def pattern(u: torch.Tensor) -> torch.Tensor:
    sign = torch.randint(0, 2, u.shape, generator=torch.Generator().manual_seed(7)) * 2.0 - 1
    return (u + EPS * sign).clamp(0, 1)


def test_an_attack_cannot_choose_the_noise_by_seeding_generators():
    data = load_embedded("test", images=2, size=16)
    registry = registry_with(Reseeder)
    honest = run_pair(data, {"name": "pgd", "random_start": False}, registry, threats=("scene",))["scene"]
    cheat = run_pair(data, {"name": "reseeder", "random_start": False}, registry, threats=("scene",))["scene"]
    assert honest["status"] == cheat["status"] == "done"
    assert np.array_equal(honest["adv"], cheat["adv"])
    assert not np.array_equal(honest["adv"], data.lq.numpy())


def test_the_scored_noise_draw_is_the_datasets_whatever_the_attack_does():
    data = load_embedded("test", images=2, size=16)
    registry = registry_with(FixedPattern)
    runs = [run_pair(data, {"name": "fixedpattern", "meddle": m}, registry, threats=("scene",))["scene"]
            for m in (False, True)]
    assert [r["status"] for r in runs] == ["done", "done"]
    render = SceneRender(data.scene, data.psf, data.photons, data.read_noise, seed=0)
    expected = render.evaluate(pattern(render.start()), data.noise).numpy()
    assert np.abs(runs[0]["adv"] - expected).max() < 1e-6
    assert np.array_equal(runs[0]["adv"], runs[1]["adv"])


class NoiseWriter(PGD):
    """Finds the worker through the garbage collector and zeroes the scored noise draw."""

    name = "noisewriter"

    def perturb(self, target, lq, hq, budget, generator):
        arena_worker().data.noise.zero_()
        return pattern(lq)


def test_an_attack_that_overwrites_the_scored_noise_draw_is_disqualified():
    data = load_embedded("test", images=2, size=16)
    kept = data.noise.clone()
    out = run_pair(data, "noisewriter", registry_with(NoiseWriter), threats=("scene",))["scene"]
    assert out["status"] == "disqualified" and "modified" in out["reason"]
    assert torch.equal(data.noise, kept)  # and the arena put it back


def test_each_oracle_evaluation_draws_new_noise_outside_torchs_global_generator():
    data = load_embedded("test", images=2, size=16)
    make = lambda: SceneRender(data.scene, data.psf, data.photons, data.read_noise, seed=3)  # noqa: E731
    a, b = make(), make()
    u = a.start()
    torch.manual_seed(0)
    first = a(u)
    torch.manual_seed(0)
    second = a(u)
    assert (first - second).abs().max() > 1e-3  # EOT: every evaluation is a new draw
    torch.manual_seed(12345)
    assert torch.equal(b(u), first)  # the draws follow the match seed, not the global RNG
    assert (first - data.lq).abs().max() > 1e-3  # and no oracle draw is the scored one


# -- the patch variant -------------------------------------------------------------------------


def test_the_patch_is_a_stated_share_of_the_frame_and_nothing_outside_it_reaches_the_camera():
    data = load_embedded("test", images=2, size=16)
    render = SceneRender(data.scene, data.psf, data.photons, data.read_noise, seed=0, patch=0.25)
    m = render.margin
    inside = render.mask[:, 0]
    assert inside[:, m:-m, m:-m].sum((-2, -1)).tolist() == [64.0, 64.0]  # 8x8 of 16x16
    assert inside.sum() == inside[:, m:-m, m:-m].sum()
    u0 = render.start()
    outside = u0 + EPS * (1 - render.mask.float())
    assert torch.equal(render.evaluate(outside, data.noise), render.evaluate(u0, data.noise))
    assert not torch.equal(render.evaluate(pattern(u0), data.noise), render.evaluate(u0, data.noise))


# -- a tournament: stored, ranked apart, skipped without scenes --------------------------------


def test_a_scene_tournament_stores_and_ranks_scene_rows_apart(tmp_path):
    t = parse_config({"name": "scene", "threat_models": ["oblivious", "scene", "scene-patch-25"],
                      "data": {"images": 2, "size": 16}, "restorers": ["tiny"], "defenses": ["none"],
                      "attacks": ["fgsm", {"name": "pgd", "restarts": 1}, "noise", "cheat"],
                      "budgets": [{"eps": "8/255", "steps": 3}], "samples_per_match": 1})
    db = db_url(tmp_path)
    report = run_tournament(t, db, executor="local", progress=False, registry=registry_with(Cheat))
    engine = open_reader(db)
    rows = queries.matches(engine, report.tournament_id)
    assert {r["threat"] for r in rows} == {"oblivious", "scene", "scene-patch-25"}
    by = {(r["threat"], r["attack"]): r for r in rows}
    for threat in ("scene", "scene-patch-25"):
        assert [by[(threat, a)]["status"] for a in ("fgsm", "pgd", "noise")] == ["done"] * 3
        assert by[(threat, "cheat")]["status"] == "disqualified"
        kinds = {s["kind"] for s in queries.samples_of(engine, by[(threat, "pgd")]["id"])}
        assert {"scene_adv", "scene_delta", "adv"} <= kinds
    assert not {"scene_adv"} & {s["kind"] for s in queries.samples_of(engine, by[("oblivious", "pgd")]["id"])}
    board = views.leaderboard(engine, report.tournament_id)
    assert sorted(r["threat"] for r in board) == ["oblivious", "scene", "scene-patch-25"]
    only = views.leaderboard(engine, report.tournament_id, threat="scene")
    assert [r["threat"] for r in only] == ["scene"]
    scene_pgd = queries.scores_of(engine, by[("scene", "pgd")]["id"])
    assert all(s["linf"] > 0 for s in scene_pgd)  # the rendered perturbation, input-domain units
    from arena.report import write_report

    md = write_report(db, tmp_path / "report", report.tournament_id)[0].read_text()
    for threat in ("oblivious", "scene", "scene-patch-25"):
        assert f"{threat}, linf ε = 8/255" in md


def test_datasets_without_scenes_plan_scene_matches_as_skipped_with_the_reason():
    base = {"threat_models": ["oblivious", "scene", "scene-patch-10"], "restorers": ["tiny"], "attacks": ["fgsm"]}
    registry = registry_with(Cheat)
    for data in ({"name": "poled", "root": "/nowhere"}, {"name": "embedded", "split": "train"}):
        matches = plan(parse_config({**base, "data": data}), registry)
        by = {m.threat: m for m in matches}
        assert by["oblivious"].status == "planned"
        for threat in ("scene", "scene-patch-10"):
            assert by[threat].status == "skipped"
            assert "needs HDR scenes" in by[threat].reason and data["name"] in by[threat].reason
    assert all(m.status == "planned" for m in plan(parse_config(base), registry))


@pytest.mark.parametrize("bad", ["scenery", "scene-patch-0", "scene-patch-100", "scene-patch-"])
def test_a_bad_threat_model_name_fails_in_one_line_naming_the_allowed_ones(bad):
    with pytest.raises(ConfigError) as err:
        parse_config({"threat_models": [bad], "restorers": ["tiny"], "attacks": ["fgsm"]})
    message = str(err.value)
    assert "\n" not in message and bad in message and "scene-patch-<percent>" in message
