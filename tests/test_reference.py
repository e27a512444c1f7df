"""The paper's published tables, spot-checked against the paper's text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rlcsc.models.rlcsc import RLCSC, RLCSCConfig
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


def test_tables_3_4_and_figures_match_the_paper_text() -> None:
    t3 = table("table3")
    assert list(t3.query("residual").psnr) == [33.24, 33.61, 33.61, 34.02]
    assert set(t3.query("not residual").psnr) == {6.54}
    t4 = table("table4")
    assert t4.query("model == 'RL-CSC' and batch == 128 and patch == 33").memory_mb.item() == 9421
    assert t4.query("model == 'DRRN' and layers == 20").memory_mb.item() == 9043
    f7 = table("figure7")
    assert dict(zip(f7.recursions, f7.psnr)) == {15: 33.98, 20: 34.06, 25: 34.11, 48: 34.16}
    f1 = table("figure1").set_index("model")
    assert len(f1) == 9 and f1.loc["MemNet", "psnr"] == 34.09
    assert f1.psnr_source.notna().all() and f1.parameters_source.notna().all()
    # the caption's two red points: K = 25 (30 layers) and K = 48 (53 layers), more recursions adding no parameters
    ours = f1.loc["RL-CSC"]
    assert dict(zip(ours.layers, ours.psnr)) == {30: 34.11, 53: 34.16}
    for k, row in zip((25, 48), ours.sort_values("layers").itertuples()):
        network = RLCSC(RLCSCConfig(recursions=k))
        assert (row.layers, row.parameters) == (network.depth, sum(p.numel() for p in network.parameters()))


def test_a_published_number_given_twice_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every table holds each published number once; a second row of one (an edit of a copy) is named, not
    averaged into a number the paper never printed."""
    from rlcsc import reference

    for name in reference.KEYS:
        assert not table(name).duplicated(reference.KEYS[name]).any(), name
    shutil.copytree(reference.HERE, tmp_path / "reference")
    path = tmp_path / "reference" / "table1.csv"
    path.write_text(path.read_text() + 'Set5,3,RL-CSC,34.50,0.9300,"an edit"\n')
    monkeypatch.setattr(reference, "HERE", tmp_path / "reference")
    with pytest.raises(ValueError, match=r"table1.csv: 2 rows give the same published number \(dataset, scale, "
                                         r"method: Set5, 3, RL-CSC\); keep one"):
        table("table1")
