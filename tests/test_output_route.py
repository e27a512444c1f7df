"""The output-route check: a network's output scored by this package's protocol and through a saved RGB result image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlcsc.atomic import save_torch
from rlcsc.color import rgb2y
from rlcsc.errors import RlcscError
from rlcsc.evaluate import evaluate, summarize
from rlcsc.inference import Network, model_state
from rlcsc.models.rlcsc import RLCSC, RLCSCConfig
from rlcsc.output_route import output_route, through_rgb
from rlcsc.rounding import im2uint


def test_a_grey_result_image_is_its_rounded_y() -> None:
    sr = np.random.default_rng(0).random((12, 10))
    assert np.array_equal(through_rgb(np.zeros((12, 10), np.uint8), sr, 2), im2uint(sr))


def test_an_rgb_result_image_rounds_y_a_second_time() -> None:
    rng = np.random.default_rng(1)
    rows, cols = np.meshgrid(np.linspace(60, 190, 24), np.linspace(60, 190, 24), indexing="ij")
    rgb = np.dstack([rows, cols, 250 - rows]).astype(np.uint8)  # smooth colours, well inside the gamut
    sr = rgb2y(rgb) / 255 + rng.normal(0, 0.01, (24, 24))
    back = through_rgb(rgb, sr, 3).astype(int)
    once = im2uint(sr).astype(int)
    assert np.abs(back - once).max() <= 1  # inside the gamut the RGB rounding moves Y by a grey level at most
    assert (back != once).any()  # and it does move it: the route is not the protocol's


def test_the_y_route_is_the_protocol(mirror: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    save_torch(model_state(RLCSC(RLCSCConfig(recursions=1, features=4, codes=4))), model)
    recorded = output_route(model, mirror, ["Set5"], [3], jobs=1)
    result = recorded["metrics"]["Set5"]["x3"]
    protocol = summarize(evaluate(Network(model), mirror, ["Set5"], [3], True, jobs=1))["Set5"]["x3"]
    assert result["images"] == 5
    for metric in ("psnr", "ssim", "ifc"):
        assert result[f"{metric}_y"] == pytest.approx(protocol[metric], abs=1e-12)
        assert result[f"{metric}_rgb_minus_y"] == pytest.approx(result[f"{metric}_rgb"] - result[f"{metric}_y"])
    assert result["psnr_rgb_minus_y"] != 0
    assert recorded["machine"]["cpu_cores"] and recorded["machine"]["date"]  # where and when it was measured


def test_the_rgb_route_joins_bicubic_chroma_not_the_original_s() -> None:
    """Y survives the RGB file unless a colour leaves the gamut. A red and blue checkerboard of 4-pixel squares is
    in the gamut with its own Cb and Cr (its Y comes back as it went); with Cb and Cr bicubic from the x3
    down-sampled image the squares' edges blur into colours that do not exist, are clipped, and Y moves."""
    r = np.arange(24)
    red = ((r[:, None] // 4 + r[None, :] // 4) % 2).astype(bool)
    rgb = np.zeros((24, 24, 3), np.uint8)
    rgb[red], rgb[~red] = (255, 0, 0), (0, 0, 255)
    sr = rgb2y(rgb) / 255
    assert np.abs(through_rgb(rgb, sr, 3).astype(int) - im2uint(sr).astype(int)).max() > 1


def test_a_missing_model_or_a_set_that_is_not_a_test_set_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RlcscError, match="model file not found"):
        output_route(tmp_path / "none.pt", tmp_path, ["Set5"], [3])
    model = tmp_path / "model.pt"
    save_torch(model_state(RLCSC(RLCSCConfig(recursions=1, features=4, codes=4))), model)
    with pytest.raises(RlcscError,
                       match=r"unknown test set 'T91'; choose from \['Set5', 'Set14', 'BSD100', 'Urban100'\]"):
        output_route(model, tmp_path, ["Set5", "T91"], [3])


def test_each_cell_averages_its_own_dataset_and_scale(mirror: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A cell is the mean of its dataset's images at its scale, and counts them: Set5 (5 images) and Set14 (14)
    at x2 and x4, each image scored here as its index in its set plus its scale."""
    from rlcsc import output_route as route

    def score(task: tuple) -> dict:
        dataset, path, scale, _ = task
        index = [p.name for p in sorted((mirror / dataset).iterdir())].index(path.name)
        return {"dataset": dataset, "image": path.name, "scale": scale,
                **{f"{m}_{r}": index + scale + (0.5 if r == "rgb" else 0)
                   for m in ("psnr", "ssim", "ifc") for r in ("y", "rgb")}}

    monkeypatch.setattr(route, "_score", score)
    model = tmp_path / "model.pt"
    save_torch(model_state(RLCSC(RLCSCConfig(recursions=1, features=4, codes=4))), model)
    cells = output_route(model, mirror, ["Set5", "Set14"], [2, 4], jobs=1)["metrics"]
    for dataset, n in (("Set5", 5), ("Set14", 14)):
        for scale in (2, 4):
            cell = cells[dataset][f"x{scale}"]
            assert (cell["images"] == n and cell["psnr_y"] == (n - 1) / 2 + scale
                    and cell["ssim_rgb"] == (n - 1) / 2 + scale + 0.5)
            assert cell["ifc_rgb_minus_y"] == 0.5
