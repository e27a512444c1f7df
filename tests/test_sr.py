"""`rlcsc sr` and whole-image inference: tiling, colour, sizes, errors, and a real gain over bicubic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from rlcsc.color import rgb2y
from rlcsc.crop import modcrop, shave
from rlcsc.data.augment import AugmentParams, augment
from rlcsc.data.patches import PatchParams, make_patches
from rlcsc.imresize import imresize
from rlcsc.inference import apply, model_state
from rlcsc.metrics import psnr
from rlcsc.models.rlcsc import RLCSC, RLCSCConfig
from rlcsc.train import TrainParams, save_atomic, train


def run_sr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlcsc.cli", "sr", *args], capture_output=True, text=True)


def test_tiled_inference_equals_whole_image() -> None:
    torch.manual_seed(0)
    model = RLCSC(RLCSCConfig(recursions=3, features=4, codes=8)).eval()
    img = np.random.default_rng(0).random((70, 53))
    whole = apply(model, img, tile=1000)
    np.testing.assert_allclose(apply(model, img, tile=16), whole, atol=1e-5)
    np.testing.assert_allclose(apply(model, img, tile=25), whole, atol=1e-5)
    np.testing.assert_array_equal(apply(model, torch.from_numpy(img), tile=25), apply(model, img, tile=25))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    """A briefly trained model (600 steps, under a minute on two cores) on patches of two scikit-image photos."""
    root = tmp_path_factory.mktemp("sr")
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(skdata, name)()).save(root / f"{name}.png")
    aug = AugmentParams(flips=("none", "leftright"), rotations=(0, 90), factors=(1.0,))
    augment([root / "astronaut.png", root / "coffee.png"], root / "aug", aug, jobs=1)
    make_patches(root / "aug", root / "patches", PatchParams(scales=(3,), chunk=16), jobs=1)
    p = TrainParams(recursions=5, features=16, codes=32, zero_last=True, pairs=4800, batch=16, epochs=2,
                    lr=0.01, checkpoint_every=1000, compile=False, device="cpu")
    train(p, root / "patches", mirror, root / "model")
    return root / "model" / "model.pt"


def test_sr_beats_bicubic_on_an_unseen_photo(trained: Path, tmp_path: Path) -> None:
    hr = modcrop(skdata.chelsea(), 3)  # not among the training photos
    lr = np.clip(np.floor(imresize(hr, 1 / 3) + 0.5), 0, 255).astype(np.uint8)
    Image.fromarray(lr).save(tmp_path / "lr.png")
    proc = run_sr(str(tmp_path / "lr.png"), "--scale", "3", "--model", str(trained), "-o", str(tmp_path / "sr.png"))
    assert proc.returncode == 0, proc.stderr
    sr = np.asarray(Image.open(tmp_path / "sr.png"))
    assert sr.shape == hr.shape and sr.dtype == np.uint8
    y_hr, y_sr = rgb2y(hr).astype(float), rgb2y(sr).astype(float)
    y_bic = rgb2y(imresize(lr, 3)).astype(float)
    gain = psnr(shave(y_hr, 3), shave(y_sr, 3)) - psnr(shave(y_hr, 3), shave(y_bic, 3))
    assert gain > 0.1, f"network is only {gain:.3f} dB above bicubic"


def test_large_output_is_tiled(tmp_path: Path) -> None:
    model = RLCSC(RLCSCConfig(recursions=1, features=2, codes=2))
    save_atomic(model_state(model), tmp_path / "m.pt")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1000, 1334, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    proc = run_sr(str(tmp_path / "big.png"), "--scale", "3", "--model", str(tmp_path / "m.pt"), "-o", str(tmp_path / "o.png"))
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "o.png").size == (4002, 3000)


def test_sr_errors_are_one_line(tmp_path: Path) -> None:
    model = RLCSC(RLCSCConfig(recursions=1, features=2, codes=2))
    save_atomic(model_state(model), tmp_path / "m.pt")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    cases = [
        (["bad.png", "--scale", "3", "--model", "m.pt"], "cannot read image"),
        (["ok.png", "--scale", "3", "--model", "missing.pt"], "model file not found"),
        (["ok.png", "--scale", "5", "--model", "m.pt"], "between 2 and 4"),
    ]
    for args, message in cases:
        args = [str(tmp_path / a) if a.endswith(".png") or a.endswith(".pt") else a for a in args]
        proc = run_sr(*args, "-o", str(tmp_path / "out.png"))
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
