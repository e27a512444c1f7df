"""The output-route check: a network's output scored by this package's protocol and through a saved RGB result image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlcsc.atomic import save_torch
from rlcsc.color import rgb2y
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
