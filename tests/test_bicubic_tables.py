"""The Bicubic columns of the paper's Tables 1 (PSNR/SSIM) and 2 (IFC), reproduced from the mirror."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlcsc.evaluate import bicubic, evaluate, ilr_pair, summarize
from rlcsc.imresize import imresize
from rlcsc.reference import table


@pytest.fixture(scope="module")
def measured(mirror: Path) -> dict:
    """Bicubic on all four test sets at x2-x4; IFC where Table 2 reports it (not BSD100)."""
    scores = evaluate(bicubic, mirror, ["Set5", "Set14", "Urban100"], with_ifc=True)
    scores += evaluate(bicubic, mirror, ["BSD100"], with_ifc=False)
    return summarize(scores)


def test_table1_bicubic_psnr_ssim(measured: dict) -> None:
    ref = table("table1").query("method == 'Bicubic'")
    assert len(ref) == 12
    for r in ref.itertuples():
        got = measured[r.dataset][f"x{r.scale}"]
        assert got["psnr"] == pytest.approx(r.psnr, abs=0.02), (r.dataset, r.scale)
        assert got["ssim"] == pytest.approx(r.ssim, abs=0.0010), (r.dataset, r.scale)


def test_table2_bicubic_ifc(measured: dict) -> None:
    ref = table("table2").query("method == 'Bicubic'")
    assert len(ref) == 9
    for r in ref.itertuples():
        assert measured[r.dataset][f"x{r.scale}"]["ifc"] == pytest.approx(r.ifc, abs=0.002), (r.dataset, r.scale)


def test_the_ilr_input_keeps_bicubic_overshoot(tmp_path: Path) -> None:
    """Step 2 of the protocol is `imresize(imresize(Y, 1/s), s)` in double: nothing is clipped to [0, 1] before
    the network sees it (a sharp edge overshoots both ways)."""
    img = np.zeros((81, 81), np.uint8)
    img[:, 41:] = 255
    Image.fromarray(img).save(tmp_path / "edge.png")
    hr, ilr = ilr_pair(tmp_path / "edge.png", 3)
    np.testing.assert_array_equal(hr, img / 255)
    np.testing.assert_array_equal(ilr, imresize(imresize(img / 255, 1 / 3), 3))
    assert ilr.max() > 1 and ilr.min() < 0
