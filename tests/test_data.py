"""Tests of arena.data: the physics of the PSFs and of image formation, the embedded
benchmark (determinism, cache, difficulty) and the loaders for datasets on disk."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import skimage.data
import torch
from PIL import Image

import arena.data as D
import arena.data.embedded as E


def psnr(a, b) -> float:
    mse = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))
    return 10 * np.log10(1.0 / mse)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("arena-cache"))


# --------------------------------------------------------------------------- PSF physics

@pytest.mark.parametrize("layout", sorted(D.LAYOUTS))
@pytest.mark.parametrize("angle", D.ANGLES)
def test_psf_is_a_nonnegative_unit_sum_kernel(layout, angle):
    k = D.make_psf(layout, angle, 63)
    assert k.shape == (3, 63, 63) and k.dtype == np.float32
    assert (k >= 0).all()
    np.testing.assert_allclose(k.sum(axis=(1, 2)), 1.0, atol=1e-5)
    # The central peak is the brightest pixel of every channel.
    for c in range(3):
        assert np.unravel_index(np.argmax(k[c]), k[c].shape) == (31, 31)


def _order_peak(profile: np.ndarray, expected: float) -> float:
    """Sub-pixel position of the brightest pixel within ±25% of `expected` (parabola on log)."""
    lo, hi = int(np.floor(0.75 * expected)), int(np.ceil(1.25 * expected))
    i = lo + int(np.argmax(profile[lo:hi + 1]))
    assert lo < i < hi, f"no local peak near {expected:.2f} px (max at window edge {i})"
    a, b, c = np.log(profile[i - 1:i + 2])
    return i + 0.5 * (a - c) / (a - 2 * b + c)


@pytest.mark.parametrize("layout", sorted(D.LAYOUTS))
@pytest.mark.parametrize("angle", [0.0, 90.0])
def test_first_grating_order_sits_where_pitch_and_wavelength_put_it(layout, angle):
    # Grating equation: frequency 1/T cycles per pupil sample lands at
    # field_px · (λ / λ_ref) / T sensor pixels (see Optics). Each channel averages its band,
    # so its order sits at the band's mean wavelength.
    o = D.OPTICS
    period = D.LAYOUTS[layout].period[0]  # along the layout's own x axis
    k = D.make_psf(layout, angle, 63)
    c = 31
    found = {}
    for ci, band in enumerate("RGB"):
        lam = float(np.mean(D.CHANNEL_WAVELENGTHS[band]))
        expected = o.field_px * lam / (o.lambda_ref * period)
        # At 0° the layout x axis runs along image rows; rotated 90° it runs down the columns.
        profile = k[ci, c, c:] if angle == 0 else k[ci, c:, c]
        found[band] = _order_peak(profile, expected)
        assert abs(found[band] - expected) < 0.3, (band, found[band], expected)
    lam_r, lam_b = (np.mean(D.CHANNEL_WAVELENGTHS[b]) for b in "RB")
    shift = o.field_px * (lam_r - lam_b) / (o.lambda_ref * period)
    assert found["R"] - found["B"] > 1.0  # red diffracts further out than blue
    assert abs((found["R"] - found["B"]) - shift) < 0.4


def test_psf_severity_and_long_tail():
    r = np.hypot(*np.mgrid[-31:32, -31:32])
    core = {}
    for layout in D.LAYOUTS:
        k = D.make_psf(layout, 0.0, 63).mean(axis=0)
        core[layout] = float(k[r <= 2].sum())
        # A long tail: light still arrives 25+ px out, within 4 decades of the peak.
        assert k[r >= 25].max() > 1e-4 * k.max()
    # Small openings send most light into the orders (zero-order fraction ≈ fill factor).
    assert core["poled"] < 0.35 < core["toled"]
    assert core["poled"] < core["holes"] < core["toled"]


def test_psf_zero_order_fraction_matches_fill_factor():
    # For a display mask t on the aperture A, the zero order carries (Σt)²/(|A|·Σt²) of the
    # light (Parseval). For the binary poled mask that is its fill factor.
    p = D.pupil("poled", 0.0)
    area = np.pi * (D.OPTICS.aperture / 2) ** 2
    fill = p.sum() ** 2 / (area * (p ** 2).sum())
    k = D.make_psf("poled", 0.0, 63).mean(axis=0)
    r = np.hypot(*np.mgrid[-31:32, -31:32])
    # Orders start ≥ 8 px out; the Airy core (radius 1.2 px) is inside r ≤ 4, minus its rings.
    assert 0.7 * fill < k[r <= 4].sum() < 1.4 * fill, (k[r <= 4].sum(), fill)


def test_kernel_codes_separate_psfs():
    bank, names = D.psf_bank(63)
    assert len(names) == len(set(names)) == len(D.LAYOUTS) * len(D.ANGLES)
    codes = D.kernel_codes(bank, 5)
    assert codes.shape == (len(bank), 5) and np.isfinite(codes).all()
    d = np.linalg.norm(codes[:, None] - codes[None], axis=-1)
    assert (d[~np.eye(len(bank), dtype=bool)] > 1e-3).all()
    np.testing.assert_array_equal(codes, D.kernel_codes(bank.copy(), 5))  # reproducible signs


# --------------------------------------------------------------------------- formation

def test_point_source_in_the_dark_images_the_psf():
    k = D.make_psf("holes", 30.0, 31)
    x = np.zeros((3, 64, 64))
    x[:, 32, 32] = 0.8
    lq, hq = D.form_udc(x, k, None, noise=False, clip=False)
    lin = D.inverse_tonemap(lq.astype(np.float64))
    np.testing.assert_allclose(lin[:, 32 - 15:32 + 16, 32 - 15:32 + 16], 0.8 * k,
                               atol=2e-6, rtol=2e-3)
    assert lin[:, :16, :].max() < 1e-6  # nothing beyond the kernel's reach
    assert hq[:, 32, 32] == pytest.approx(D.tonemap(0.8), abs=1e-6)


def test_saturation_clips_at_the_sensor_maximum():
    k = D.make_psf("poled", 0.0, 31)
    x = np.full((3, 48, 48), 0.1)
    x[:, 16:32, 16:32] = 30.0  # a lamp
    lq, hq = D.form_udc(x, k, None, noise=False, clip=True)
    lq_free, _ = D.form_udc(x, k, None, noise=False, clip=False)
    sat = D.tonemap(1.0)
    assert lq.max() == pytest.approx(sat, abs=1e-6)
    assert lq_free.max() > 0.9 > sat
    assert np.isclose(lq, sat, atol=1e-6).mean() > 0.1
    assert hq.max() > 0.99  # ground truth keeps the highlight


def test_poisson_gaussian_noise_statistics():
    rng = np.random.default_rng(0)
    k = np.zeros((3, 3, 3))
    k[:, 1, 1] = 1.0
    level, photons, read = 0.25, 800.0, 0.003
    x = np.full((3, 128, 128), level)
    lq, _ = D.form_udc(x, k, rng, noise=True, clip=False, photons=photons, read_noise=read)
    lin = D.inverse_tonemap(lq.astype(np.float64))
    assert lin.mean() == pytest.approx(level, rel=0.01)
    assert lin.var() == pytest.approx(level / photons + read ** 2, rel=0.05)


def test_convolution_uses_scene_context_not_wraparound():
    k = D.make_psf("toled", 0.0, 31)
    x = np.zeros((3, 40 + 30, 40 + 30))
    x[:, 5, 35] = 100.0  # a lamp just above the frame (inside the margin)
    lq, _ = D.form_udc(x, k, None, noise=False, clip=False, margin=15)
    lin = D.inverse_tonemap(lq.astype(np.float64))
    # Its flare reaches the top rows of the frame, and nothing wraps to the bottom.
    assert lin[:, :3].max() > 1e-3 and lin[:, -10:].max() < 1e-9


def test_wiener_deconvolution_with_the_known_psf_recovers_the_scene():
    im = skimage.data.astronaut()[100:228, 150:278] / 255.0
    x = D.srgb_to_linear(im).transpose(2, 0, 1)
    results = {}
    for layout in D.LAYOUTS:
        k = D.make_psf(layout, 30.0, 63)
        y = D.circular_convolve(x, k)  # noise and clipping off; circular makes Wiener exact
        otf = D.psf_to_otf(k, x.shape[-2:])
        xr = np.fft.irfft2(np.fft.rfft2(y) * np.conj(otf) / (np.abs(otf) ** 2 + 1e-6),
                           s=x.shape[-2:])
        before = psnr(D.tonemap(np.maximum(y, 0)), D.tonemap(x))
        after = psnr(D.tonemap(np.maximum(xr, 0)), D.tonemap(x))
        results[layout] = (before, after)
        assert after > 30.0 and after > before + 10.0, (layout, before, after)
    print("\nWiener PSNR (degraded -> restored, dB):",
          {k: (round(a, 1), round(b, 1)) for k, (a, b) in results.items()})


# --------------------------------------------------------------------------- embedded set

def test_embedded_is_deterministic_per_seed(tmp_path):
    a = D.load_data("embedded", "test", size=32, seed=3, cache_dir=str(tmp_path / "a"))
    b = D.load_data("embedded", "test", size=32, seed=3, cache_dir=str(tmp_path / "b"))
    assert a.hash == b.hash
    for t in ("lq", "hq", "psf", "code"):
        assert getattr(a, t).numpy().tobytes() == getattr(b, t).numpy().tobytes()
    c = D.load_data("embedded", "test", size=32, seed=4, cache_dir=str(tmp_path / "c"))
    assert c.hash != a.hash and c.ids == a.ids
    assert a.hash == D.data_hash(a.lq, a.hq, a.psf, a.code)


def test_embedded_contract(cache):
    d = D.load_data("embedded", "test", size=32, cache_dir=cache)
    n = len(d)
    assert 48 <= n <= 96
    assert d.lq.shape == d.hq.shape == (n, 3, 32, 32)
    assert d.lq.dtype == d.hq.dtype == torch.float32
    assert 0 <= float(d.lq.min()) and float(d.lq.max()) <= 1
    assert 0 <= float(d.hq.min()) and float(d.hq.max()) <= 1
    assert d.psf.shape == (n, 3, 63, 63) and d.code.shape == (n, 5)
    torch.testing.assert_close(d.psf.sum(dim=(2, 3)), torch.ones(n, 3))
    assert len(set(d.ids)) == n and d.name == "embedded" and d.version == D.EMBEDDED_VERSION
    assert len(d.hash) == 64


def test_splits_use_disjoint_photographs(cache):
    train = D.load_data("embedded", "train", size=16, cache_dir=cache)
    test = D.load_data("embedded", "test", size=16, cache_dir=cache)
    assert len(train) >= 300
    photos = lambda d: {i.split("-")[0] for i in d.ids}  # noqa: E731
    assert not photos(train) & photos(test)
    assert len(photos(train)) >= 5 and len(photos(test)) >= 3


def test_images_takes_a_diverse_prefix(cache):
    full = D.load_data("embedded", "test", size=32, cache_dir=cache)
    few = D.load_data("embedded", "test", images=6, size=32, cache_dir=cache)
    assert few.ids == full.ids[:6]
    assert few.hash == full.subset(list(range(6))).hash
    assert {i.split("-")[-1].rstrip("0123456789") for i in few.ids} == set(D.LAYOUTS)
    assert len({i.split("-")[0] for i in few.ids}) >= 3


def test_cache_round_trip_and_atomic_write(tmp_path, monkeypatch):
    first = D.load_data("embedded", "test", size=24, cache_dir=str(tmp_path))
    path = D.cache_path("test", 24, 0, str(tmp_path))
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]

    def boom(*a, **k):
        raise AssertionError("regenerated although the cache was there")

    monkeypatch.setattr(E, "generate", boom)
    second = D.load_data("embedded", "test", size=24, cache_dir=str(tmp_path))
    assert second.hash == first.hash and second.ids == first.ids
    monkeypatch.undo()

    path.write_bytes(path.read_bytes()[:1000])  # a damaged cache is regenerated, not trusted
    third = D.load_data("embedded", "test", size=24, cache_dir=str(tmp_path))
    assert third.hash == first.hash


def test_cache_write_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(E.np, "savez", fail)
    d = D.load_data("embedded", "test", images=3, size=16, cache_dir=str(tmp_path))
    assert len(d) == 3 and list(tmp_path.iterdir()) == []


def test_default_cache_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ARENA_CACHE", str(tmp_path))
    assert D.default_cache_dir() == tmp_path / "data"


def test_benchmark_inputs_are_degraded_and_layouts_span_severities(cache):
    d = D.load_data("embedded", "test", size=64, cache_dir=cache)
    per = collections.defaultdict(list)
    for i, name in enumerate(d.ids):
        per[name.split("-")[-1].rstrip("0123456789")].append(psnr(d.lq[i].numpy(), d.hq[i].numpy()))
    mean = {k: float(np.mean(v)) for k, v in per.items()}
    print("\nmean PSNR(lq, hq) per layout (dB):", {k: round(v, 2) for k, v in mean.items()})
    assert mean["poled"] < 25.0
    assert mean["poled"] < mean["holes"] < mean["toled"]
    assert mean["toled"] - mean["poled"] > 3.0
    # Saturation and highlights occur but do not dominate.
    sat = float((d.lq >= D.tonemap(1.0) - 1e-6).float().mean())
    assert 0.005 < sat < 0.2


def test_udcdata_hash_and_subset():
    lq = torch.rand(4, 3, 8, 8)
    d = D.UDCData(lq=lq, hq=lq.clone(), psf=None, code=None, ids=list("abcd"), name="t",
                  version="t-v1")
    assert len(d) == 4 and d.hash == D.data_hash(d.lq, d.hq, None, None)
    s = d.subset([2, 0])
    assert s.ids == ["c", "a"] and torch.equal(s.lq[0], lq[2]) and s.hash != d.hash
    lq2 = lq.clone()
    lq2[0, 0, 0, 0] += 1e-6
    assert D.UDCData(lq2, lq.clone(), None, None, list("abcd"), "t", "t-v1").hash != d.hash


def test_preview_writes_a_png(tmp_path, cache):
    out = D.preview(str(tmp_path / "sheet.png"), n=3, size=32, cache_dir=cache)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 300


# --------------------------------------------------------------------------- real datasets

def _hdr(rng, h=40, w=40):
    return (rng.random((h, w, 3)) * 4).astype(np.float32)


def test_discnet_simple_layout(tmp_path):
    rng = np.random.default_rng(0)
    for d in ("GT", "input"):
        (tmp_path / "test" / d).mkdir(parents=True)
    gts = {}
    for i in range(3):
        gts[i] = _hdr(rng)
        np.save(tmp_path / "test" / "GT" / f"{i:03d}.npy", gts[i])
        np.save(tmp_path / "test" / "input" / f"{i:03d}.npy", gts[i] * 0.5)
    (tmp_path / "PSF").mkdir()
    psf = rng.random((81, 81, 3)).astype(np.float32)  # HxWx3 like DISCNet's
    np.save(tmp_path / "PSF" / "zte.npy", psf)
    d = D.load_data("discnet", "test", root=str(tmp_path), size=32)
    assert d.ids == ["000", "001", "002"] and d.lq.shape == (3, 3, 32, 32)
    crop = gts[1][4:36, 4:36].transpose(2, 0, 1)
    np.testing.assert_allclose(d.hq[1].numpy(), crop / (crop + 0.25), rtol=1e-6)
    np.testing.assert_allclose(d.lq[1].numpy(), crop * 0.5 / (crop * 0.5 + 0.25), rtol=1e-6)
    assert d.psf.shape == (3, 3, 63, 63)
    torch.testing.assert_close(d.psf.sum(dim=(2, 3)), torch.ones(3, 3))
    expect = psf[9:72, 9:72].transpose(2, 0, 1)
    np.testing.assert_allclose(d.psf[0].numpy(), expect / expect.sum(axis=(1, 2), keepdims=True),
                               rtol=1e-5)
    assert d.code.shape == (3, 5) and d.name == "discnet"
    assert D.check_dataset("discnet", str(tmp_path)) == []
    assert len(D.load_data("discnet", "test", root=str(tmp_path), images=2, size=32)) == 2
    (tmp_path / "train" / "GT").mkdir(parents=True)  # an empty split is reported
    assert any("train" in p for p in D.check_dataset("discnet", str(tmp_path)))


def test_discnet_release_layout(tmp_path):
    rng = np.random.default_rng(1)
    gt = tmp_path / "synthetic_data" / "GT" / "test"
    gt.mkdir(parents=True)
    (tmp_path / "PSF" / "ZTE_new").mkdir(parents=True)
    (tmp_path / "PSF" / "kernel_code").mkdir(parents=True)
    for i in (1, 2):
        inp = tmp_path / "synthetic_data" / "input" / f"ZTE_new_{i}" / "test"
        inp.mkdir(parents=True)
        for name in ("a", "b"):
            np.save(inp / f"{name}.npy", _hdr(rng, 48, 48))
        np.save(tmp_path / "PSF" / "ZTE_new" / f"ZTE_new_psf_{i}.npy", rng.random((100, 100, 3)))
        np.save(tmp_path / "PSF" / "kernel_code" / f"ZTE_new_code_{i}.npy", np.arange(5.0) * i)
    for name in ("a", "b"):
        np.save(gt / f"{name}.npy", _hdr(rng, 48, 48))
    d = D.load_data("discnet", "test", root=str(tmp_path), size=32)
    assert d.ids == ["a-ZTE_new_1", "a-ZTE_new_2", "b-ZTE_new_1", "b-ZTE_new_2"]
    np.testing.assert_array_equal(d.code[1].numpy(), np.arange(5.0) * 2)
    assert torch.equal(d.hq[0], d.hq[1])  # the GT is shared by every PSF folder
    assert not torch.equal(d.psf[0], d.psf[1])


@pytest.mark.parametrize("defect", ["nan", "shape", "partner", "unreadable", "small"])
def test_discnet_bad_files_raise_data_error_naming_the_file(tmp_path, defect):
    rng = np.random.default_rng(2)
    for d in ("GT", "input"):
        (tmp_path / "test" / d).mkdir(parents=True)
    for i in range(2):
        np.save(tmp_path / "test" / "GT" / f"{i}.npy", _hdr(rng))
        np.save(tmp_path / "test" / "input" / f"{i}.npy", _hdr(rng))
    bad = tmp_path / "test" / "input" / "1.npy"
    if defect == "nan":
        a = _hdr(rng)
        a[3, 3, 1] = np.nan
        np.save(bad, a)
    elif defect == "shape":
        np.save(bad, rng.random((40, 40)))
    elif defect == "partner":
        (tmp_path / "test" / "GT" / "1.npy").unlink()
    elif defect == "unreadable":
        bad.write_bytes(b"not a numpy file")
    elif defect == "small":
        np.save(bad, _hdr(rng, 20, 20))
    with pytest.raises(D.DataError, match="1.npy"):
        D.load_data("discnet", "test", root=str(tmp_path), size=32)
    problems = D.check_dataset("discnet", str(tmp_path))
    assert problems and all("1.npy" in p for p in problems), problems


def _png(path: Path, arr: np.ndarray, mode: str = "RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)


@pytest.mark.parametrize("fmt", ["poled", "toled"])
def test_png_pairs(tmp_path, fmt):
    rng = np.random.default_rng(3)
    arrs = {}
    for name in ("x1", "x2"):
        for side in ("HQ", "LQ"):
            arrs[side, name] = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
            _png(tmp_path / "test" / side / f"{name}.png", arrs[side, name])
    d = D.load_data(fmt, "test", root=str(tmp_path), size=32)
    assert d.ids == ["x1", "x2"] and d.psf is None and d.code is None and d.name == fmt
    np.testing.assert_allclose(d.lq[1].numpy(),
                               arrs["LQ", "x2"][4:36, 9:41].transpose(2, 0, 1) / 255.0)
    full = D.load_data(fmt, "test", root=str(tmp_path), size=0)
    assert full.hq.shape == (2, 3, 40, 50)
    assert D.check_dataset(fmt, str(tmp_path)) == []


@pytest.mark.parametrize("defect", ["partner", "grey", "unreadable", "mismatch"])
def test_png_bad_files_raise_data_error_naming_the_file(tmp_path, defect):
    rng = np.random.default_rng(4)
    for name in ("a", "b"):
        for side in ("HQ", "LQ"):
            _png(tmp_path / "test" / side / f"{name}.png",
                 rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    bad = tmp_path / "test" / "LQ" / "b.png"
    if defect == "partner":
        (tmp_path / "test" / "HQ" / "b.png").unlink()
    elif defect == "grey":
        _png(bad, rng.integers(0, 256, (40, 40), dtype=np.uint8), mode="L")
    elif defect == "unreadable":
        bad.write_bytes(b"\x89PNG garbage")
    elif defect == "mismatch":
        _png(bad, rng.integers(0, 256, (40, 36, 3), dtype=np.uint8))
    with pytest.raises(D.DataError, match="b.png"):
        D.load_data("poled", "test", root=str(tmp_path), size=32)
    problems = D.check_dataset("poled", str(tmp_path))
    assert len(problems) == 1 and "b.png" in problems[0], problems


def test_check_dataset_collects_every_problem(tmp_path):
    rng = np.random.default_rng(5)
    for d in ("GT", "input"):
        (tmp_path / "train" / d).mkdir(parents=True)
    for i in range(4):
        np.save(tmp_path / "train" / "GT" / f"{i}.npy", _hdr(rng))
    np.save(tmp_path / "train" / "input" / "0.npy", _hdr(rng))
    np.save(tmp_path / "train" / "input" / "1.npy", np.full((40, 40, 3), np.inf))
    (tmp_path / "train" / "input" / "2.npy").write_bytes(b"junk")
    problems = D.check_dataset("discnet", str(tmp_path))
    assert len(problems) == 3, problems
    for name in ("1.npy", "2.npy", "3.npy"):
        assert any(name in p for p in problems)
    assert D.check_dataset("discnet", str(tmp_path / "nowhere"))


def test_mat_stacks(tmp_path):
    rng = np.random.default_rng(6)
    gt = rng.integers(0, 256, (2, 36, 36, 3), dtype=np.uint8)
    scipy.io.savemat(tmp_path / "toled_test_gt.mat", {"test_gt": gt})
    scipy.io.savemat(tmp_path / "toled_test_display.mat", {"test_display": gt // 2})
    d = D.load_data("toled", "test", root=str(tmp_path), size=32)
    assert d.lq.shape == (2, 3, 32, 32)
    np.testing.assert_allclose(d.hq[0].numpy(), gt[0, 2:34, 2:34].transpose(2, 0, 1) / 255.0)
    (tmp_path / "toled_test_gt.mat").write_bytes(b"broken")
    with pytest.raises(D.DataError, match="toled_test_gt.mat"):
        D.load_data("toled", "test", root=str(tmp_path), size=32)


def test_unknown_names_and_missing_root():
    with pytest.raises(ValueError):
        D.load_data("nope")
    with pytest.raises(D.DataError):
        D.load_data("poled", "test")
    with pytest.raises(D.DataError, match="not a folder"):
        D.load_data("poled", "test", root=os.devnull)
