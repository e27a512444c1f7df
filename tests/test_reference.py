"""The paper's published tables, spot-checked against the paper's text."""

from __future__ import annotations

import pytest

from rlcsc.reference import table


def cell(name: str, dataset: str, scale: int, method: str):
    t = table(name)
    row = t[(t.dataset == dataset) & (t.scale == scale) & (t.method == method)]
    assert len(row) == 1
    return row.iloc[0]


def test_table1_shape_and_sample_cells() -> None:
    t = table("table1")
    assert len(t) == 4 * 3 * 7 and t.source.notna().all()
    assert tuple(cell("table1", "Set5", 3, "RL-CSC")[["psnr", "ssim"]]) == (34.11, 0.9254)
    assert tuple(cell("table1", "Urban100", 4, "MemNet")[["psnr", "ssim"]]) == (25.50, 0.7630)
    assert tuple(cell("table1", "BSD100", 2, "Bicubic")[["psnr", "ssim"]]) == (29.56, 0.8431)


def test_table2_shape_and_sample_cells() -> None:
    t = table("table2")
    assert len(t) == 3 * 3 * 7 and "BSD100" not in set(t.dataset)
    assert cell("table2", "Set14", 3, "VDSR").ifc == 4.730
    assert cell("table2", "Urban100", 2, "RL-CSC").ifc == 9.372


def test_unknown_table_names_the_available_ones() -> None:
    with pytest.raises(ValueError, match="table1"):
        table("table9")
