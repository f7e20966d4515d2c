"""Miniature replicas of the real datasets' folders, generated here (nothing binary is committed),
read by the loaders of arena/data/real.py and reported by `arena data check`.

Layouts as arena/data/real.py documents them: DISCNet's release (HDR float32 HxWx3 .npy with
radiance above 1 in highlights, one input folder per PSF `<type>_<i>`, PSFs HxWx3 summing to one
per channel, 5-D kernel codes), POLED/TOLED's 8-bit sRGB PNG pairs (frames 1024x2048, here
16x32) and the challenge's .mat stacks (one uint8 NxHxWx3 variable per file).
"""

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner
from PIL import Image

from arena.cli import main
from arena.data import load_data

H, W = 16, 32  # the real frames' 1:2 aspect


def rng(seed=0):
    return np.random.default_rng(seed)


def make_discnet(root, names=("000", "001", "002"), kinds=(("ZTE_new", 1), ("ZTE_new", 2))):
    r = rng()
    for split in ("train", "test"):
        gt = root / "synthetic_data" / "GT" / split
        gt.mkdir(parents=True)
        for n in names:
            hdr = r.uniform(0, 1, (H, W, 3)).astype(np.float32)
            hdr[7:9, 15:17] = 40.0  # a light source: HDR radiance well above 1
            np.save(gt / f"{n}.npy", hdr)
            for kind, i in kinds:
                d = root / "synthetic_data" / "input" / f"{kind}_{i}" / split
                d.mkdir(parents=True, exist_ok=True)
                np.save(d / f"{n}.npy", (hdr * 0.8 + 0.01).astype(np.float32))
    for kind, i in kinds:
        psf = r.uniform(0, 1, (65, 65, 3)).astype(np.float32)
        (root / "PSF" / kind).mkdir(parents=True, exist_ok=True)
        np.save(root / "PSF" / kind / f"{kind}_psf_{i}.npy", psf / psf.sum(axis=(0, 1)))
        (root / "PSF" / "kernel_code").mkdir(parents=True, exist_ok=True)
        np.save(root / "PSF" / "kernel_code" / f"{kind}_code_{i}.npy", r.normal(size=(1, 5)).astype(np.float32))
    return root


def make_poled(root, n=3):
    r = rng(1)
    for split in ("train", "test"):
        for side in ("HQ", "LQ"):
            (root / split / side).mkdir(parents=True)
        for k in range(n):
            hq = r.integers(0, 256, (H, W, 3), dtype=np.uint8)
            Image.fromarray(hq).save(root / split / "HQ" / f"{k}.png")
            Image.fromarray((hq // 2 + 20).astype(np.uint8)).save(root / split / "LQ" / f"{k}.png")
    return root


def make_toled_mat(root, n=3):
    r = rng(2)
    root.mkdir(parents=True, exist_ok=True)
    gt = r.integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    scipy.io.savemat(root / "toled_val_gt.mat", {"val_gt": gt})
    scipy.io.savemat(root / "toled_val_display.mat", {"val_display": (gt // 3 + 10).astype(np.uint8)})
    return root


def check(fmt, root):
    return CliRunner().invoke(main, ["data", "check", "--format", fmt, "--root", str(root)])


def test_discnet_release_layout_loads_and_is_reported(tmp_path):
    root = make_discnet(tmp_path / "discnet")
    res = check("discnet", root)
    assert res.exit_code == 0, res.output
    assert "test: 6 pairs, 16x32, input (tone-mapped) in [" in res.output  # 3 images x 2 PSFs
    assert "2 distinct PSFs (63x63 after fitting), 6 with kernel codes" in res.output
    assert "train: 6 pairs" in res.output and "a valid discnet dataset" in res.output
    data = load_data("discnet", "test", root=str(root), size=16)
    assert data.lq.shape == (6, 3, 16, 16) and data.code.shape == (6, 5)
    assert 0 <= float(data.hq.min()) and float(data.hq.max()) < 1  # φ(x) = x/(x+0.25) of HDR
    assert float(data.hq.max()) > 0.99  # the 40x light source tone-maps near 1
    torch_sums = data.psf.sum(dim=(2, 3))
    assert np.allclose(torch_sums.numpy(), 1, atol=1e-5)


def test_poled_png_layout_loads_and_is_reported(tmp_path):
    root = make_poled(tmp_path / "poled")
    res = check("poled", root)
    assert res.exit_code == 0, res.output
    assert "test: 3 pairs, 16x32, input in [" in res.output and "no PSF" in res.output
    data = load_data("poled", "train", root=str(root), size=16)
    assert data.lq.shape == (3, 3, 16, 16) and data.psf is None


def test_toled_mat_stacks_load_and_are_reported(tmp_path):
    root = make_toled_mat(tmp_path / "toled")
    res = check("toled", root)
    assert res.exit_code == 0, res.output
    assert "val: 3 pairs from toled_val_display.mat and toled_val_gt.mat, 16x32" in res.output
    data = load_data("toled", "val", root=str(root), size=16)
    assert data.lq.shape == (3, 3, 16, 16)
    assert float(data.lq.max()) <= (255 // 3 + 10) / 255 + 1e-6


def test_a_damaged_file_is_named_beside_what_was_found(tmp_path):
    root = make_discnet(tmp_path / "discnet")
    bad = root / "synthetic_data" / "GT" / "test" / "001.npy"
    bad.write_bytes(b"not numpy")
    res = check("discnet", root)
    assert res.exit_code == 1
    assert "train: 6 pairs" in res.output and "test: 4 pairs" in res.output
    assert str(bad) in res.output and "unreadable .npy" in res.output


@pytest.mark.parametrize("fmt", ["poled", "toled"])
def test_a_png_of_another_mode_is_refused_by_name(tmp_path, fmt):
    root = make_poled(tmp_path / fmt)
    Image.fromarray(np.zeros((H, W), dtype=np.uint8)).save(root / "test" / "LQ" / "1.png")
    res = check(fmt, root)
    assert res.exit_code == 1 and "expected an 8-bit RGB image, got mode L" in res.output
