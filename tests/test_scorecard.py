"""The scorecard of the book's first page: counting runs, the published numbers they reach, the protocol
checks and the cost of the rest, all from the files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from rlcsc import report, scorecard
from rlcsc.cli import main
from rlcsc.reference import table

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = {"psnr": 0.1, "ssim": 0.002, "ifc": 0.05}


@pytest.fixture(scope="module")
def recorded_bicubic(mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`rlcsc record --method bicubic` under the quick budget, cut to Set5 x3 without IFC."""
    root = tmp_path_factory.mktemp("bicubic")
    blocks = yaml.safe_load((REPO / "params.yaml").read_text())
    blocks["budgets"]["quick"]["evaluate"] = {"datasets": ["Set5"], "scales": [3], "ifc": False}
    (root / "params.yaml").write_text(yaml.safe_dump(blocks, sort_keys=False))
    argv = ["record", "--params", str(root / "params.yaml"), "--budget", "quick", "--method", "bicubic",
            "--raw", str(mirror), "--out", str(root / "runs" / "bicubic"), "--jobs", "2"]
    assert main(argv) == 0
    return root / "runs" / "bicubic"


def test_a_recorded_bicubic_evaluation_is_the_protocol_check(recorded_bicubic: Path, tmp_path: Path) -> None:
    assert {p.name for p in recorded_bicubic.iterdir()} == {"metrics.json", "per_image.csv", "evaluation.json",
                                                            "environment.json", "SHA256SUMS"}
    page = report.page(str(REPO / "params.yaml"), str(tmp_path), str(tmp_path), str(recorded_bicubic.parent), "K25")
    assert page.measured == []  # a baseline is not a released model
    (check,) = scorecard.checks(page)
    assert check.method == "Bicubic" and "runs/bicubic" in check.source
    assert check.cells("psnr") == (1, 1) and check.cells("ifc") == (0, 0)
    frame = check.frames["psnr"]
    assert frame.loc[("Set5", 3), "psnr paper"] == 30.39


def _run(root: Path, name: str, budget: str, metrics: dict | None = None, epochs: float = 1.0) -> Path:
    """A recorded run folder made from runs/K25-paper's files, with another budget, extent or metrics."""
    folder = root / name
    shutil.copytree(REPO / "runs" / "K25-paper", folder, ignore=shutil.ignore_patterns("*.pt"))
    train = json.loads((folder / "train.json").read_text())
    train["budget"], train["epochs_done"] = budget, epochs
    (folder / "train.json").write_text(json.dumps(train))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def _paper_metrics(shift: float) -> dict:
    """metrics.json holding the paper's RL-CSC numbers of Tables 1-2, PSNR moved by `shift`."""
    out: dict = {}
    for ref, metrics in (("table1", ("psnr", "ssim")), ("table2", ("ifc",))):
        t = table(ref)
        for r in t[t.method == "RL-CSC"].itertuples():
            cell = out.setdefault(r.dataset, {}).setdefault(f"x{r.scale}", {})
            cell |= {m: getattr(r, m) + (shift if m == "psnr" else 0.0) for m in metrics}
    return out


def test_a_quick_run_never_counts_and_a_paper_scale_one_does(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _run(runs, "K25-quick", "quick", _paper_metrics(0.0))
    page = report.page(str(REPO / "params.yaml"), str(tmp_path), str(tmp_path), str(runs), "K25")
    table1 = scorecard.lines(page, TOLERANCE)[0]
    assert table1.item == "Table 1, PSNR" and table1.run is None and table1.matched == 0 and table1.spread() == "-"

    _run(runs, "K25-fast", "fast", _paper_metrics(0.08), epochs=35.0)
    page = report.page(str(REPO / "params.yaml"), str(tmp_path), str(tmp_path), str(runs), "K25")
    psnr, ssim, ifc = scorecard.lines(page, TOLERANCE)[:3]
    assert psnr.run.name == "K25-fast" and (psnr.published, psnr.matched) == (12, 12) and psnr.spread() == "+0.08 dB"
    assert (ssim.matched, ifc.matched) == (12, 9) and ssim.spread() == "+0.0000"
    assert psnr.run.extent() == "35 epochs"
    psnr_beyond = scorecard.lines(page, {**TOLERANCE, "psnr": 0.05})[0]
    assert psnr_beyond.matched == 0


def test_a_number_the_paper_prints_in_several_places_counts_once_in_the_totals(tmp_path: Path) -> None:
    """Table 1's Set5 x3 PSNR of RL-CSC is also Figure 1's RL-CSC point and Figure 7's K = 25 point: each of those
    rows counts it, the totals once."""
    t1, f1, f7 = table("table1"), table("figure1"), table("figure7")
    set5_x3 = t1.query("method == 'RL-CSC' and dataset == 'Set5' and scale == 3").psnr.iloc[0]
    assert set5_x3 == f1.query("model == 'RL-CSC'").psnr.iloc[0] == f7.query("recursions == 25").psnr.iloc[0]
    runs = tmp_path / "runs"
    _run(runs, "K25-fast", "fast", _paper_metrics(0.0), epochs=35.0)
    page = report.page(str(REPO / "params.yaml"), str(tmp_path), str(tmp_path), str(runs), "K25")
    lines = scorecard.lines(page, TOLERANCE)
    found = {line.item: line for line in lines}
    assert found["Figure 1, RL-CSC"].matched == found["Figure 7, K = 25"].matched == 1
    totals = scorecard.totals(lines)
    assert totals.published == sum(line.published for line in lines) - 2
    assert totals.measured == sum(len(line.differences) for line in lines) - 2
    assert totals.matched == sum(line.matched for line in lines) - 2
    assert [items for _, items in totals.shared] == [("Table 1, PSNR", "Figure 1, RL-CSC", "Figure 7, K = 25")]
    t2, t3 = table("table2"), table("table3")
    # Figure 1's RL-CSC point and Figure 7's K = 25 point add nothing to Table 1's numbers
    distinct = 2 * len(t1.query("method == 'RL-CSC'")) + len(t2.query("method == 'RL-CSC'")) + len(t3) + len(f7) - 1
    assert totals.published == distinct


def test_the_recorded_paper_run_is_scored_as_it_stands() -> None:
    page = report.page(str(REPO / "params.yaml"), "none", "none", str(REPO / "runs"), "K25")
    found = {line.item: line for line in scorecard.lines(page, TOLERANCE)}
    run = found["Table 1, PSNR"].run
    assert run.name == "K25-paper" and run.extent() == "1 of 35 epochs"
    metrics = json.loads((REPO / "runs" / "K25-paper" / "metrics.json").read_text())
    t1 = table("table1").query("method == 'RL-CSC'")
    diffs = [metrics[r.dataset][f"x{r.scale}"]["psnr"] - r.psnr for r in t1.itertuples()]
    assert found["Table 1, PSNR"].differences == pytest.approx(diffs)
    epoch1 = found["Table 3, with residual"]
    assert len(epoch1.differences) == 1 and epoch1.published == 4
    (cost,) = [c for c in scorecard.costs(page) if c.experiment == "K25"]
    train = json.loads((REPO / "runs" / "K25-paper" / "train.json").read_text())
    assert cost.steps_left == 35 * train["steps_per_epoch"] - train["steps_done"]
    assert cost.hours == pytest.approx(cost.steps_left * train["ms_per_step"] / 3.6e6)


def test_a_diverged_run_finishes_its_experiment_s_cost(tmp_path: Path) -> None:
    """A paper-budget run without the residual that diverged is finished (its divergence is Table 3's result):
    no GPU-hours are left for it, where its steps done used to count as progress."""
    folder = _run(tmp_path, "K25_noresidual-paper", "paper")
    train = json.loads((folder / "train.json").read_text())
    train["train"]["residual"] = train["model"]["residual"] = False
    train["status"] = "diverged at epoch 1, step 1000; the weights of step 0 kept"
    (folder / "train.json").write_text(json.dumps(train))
    shutil.copytree(REPO / "runs" / "K25-paper", tmp_path / "K25-paper", ignore=shutil.ignore_patterns("*.pt"))
    page = report.page(str(REPO / "params.yaml"), "none", "none", str(tmp_path), "K25")
    cost = {c.experiment: c for c in scorecard.costs(page)}
    assert (cost["K25_noresidual"].steps_left, cost["K25_noresidual"].hours) == (0, 0.0)
    assert "diverged" in cost["K25_noresidual"].basis and cost["K25"].steps_left > 0


def test_only_runs_that_differ_in_their_seed_alone_have_a_spread(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for name, seed, fewer_steps in (("K25-fast-a", 1, 0), ("K25-fast-b", 2, 0), ("K25-fast-c", 3, 1)):
        folder = _run(runs, name, "fast")
        train = json.loads((folder / "train.json").read_text())
        train["train"]["seed"], train["steps_done"] = seed, train["steps_done"] - fewer_steps
        (folder / "train.json").write_text(json.dumps(train))
    page = report.page(str(REPO / "params.yaml"), str(tmp_path), str(tmp_path), str(runs), "K25")
    a, b, c = sorted(page.runs, key=lambda r: r.name)
    assert report.spread_groups([a], page.runs) == report.spread_groups([a, c], page.runs) == [[a, b]]
    assert report.spread_groups([c], page.runs) == []
    assert "seeds 1, 2" in report.spread_note(page.runs) and "seeds 1, 2, 3" not in report.spread_note(page.runs)
