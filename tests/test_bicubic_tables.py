"""The Bicubic columns of the paper's Tables 1 (PSNR/SSIM) and 2 (IFC), reproduced from the mirror."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlcsc.evaluate import bicubic, evaluate, summarize
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
