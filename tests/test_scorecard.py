"""The scorecard of the book's first page: counting runs, the published numbers they reach, the protocol
checks and the cost of the rest, all from the files."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
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
    assert "precision" not in json.loads((recorded_bicubic / "evaluation.json").read_text())  # no network
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
    assert psnr.run.extent() == "35 of 35 epochs"  # a finished run says so too
    psnr_beyond = scorecard.lines(page, {**TOLERANCE, "psnr": 0.05})[0]
    assert psnr_beyond.matched == 0


def test_a_finished_run_counts_for_the_final_numbers_and_only_a_paper_recipe_run_for_table_3(tmp_path: Path) -> None:
    """The numbers after the paper's 35 epochs are set against the run nearest the end of its training: a fast
    run that finished its schedule before a paper-recipe run that trained more steps but stopped short of its 35
    epochs. Table 3's are points along the paper's recipe: a paper-budget run's only, never a fast run's."""
    runs = tmp_path / "runs"

    def extent(folder: Path, steps: int, epochs: float, planned: float) -> None:
        train = json.loads((folder / "train.json").read_text())
        train |= {"steps_done": steps, "epochs_done": epochs, "epochs_planned": planned}
        (folder / "train.json").write_text(json.dumps(train))

    extent(_run(runs, "K25-fast", "fast", _paper_metrics(0.0)), 23000, 1.5256, 1.5256)
    page = report.page(str(REPO / "params.yaml"), str(tmp_path), str(tmp_path), str(runs), "K25")
    found = {line.item: line for line in scorecard.lines(page, TOLERANCE)}
    assert found["Table 1, PSNR"].run.name == "K25-fast" and found["Figure 7, K = 25"].run.name == "K25-fast"
    assert found["Table 3, with residual"].run is None and found["Table 3, with residual"].differences == ()
    extent(_run(runs, "K25-paper", "paper", _paper_metrics(-0.5)), 30152, 2.0, 35.0)
    page = report.page(str(REPO / "params.yaml"), str(tmp_path), str(tmp_path), str(runs), "K25")
    found = {line.item: line for line in scorecard.lines(page, TOLERANCE)}
    assert found["Table 1, PSNR"].run.name == "K25-fast" and found["Table 1, PSNR"].matched == 12
    table3 = found["Table 3, with residual"]
    assert table3.run.name == "K25-paper" and len(table3.differences) == 1
    extent(runs / "K25-paper", 35 * 15076, 35.0, 35.0)  # the paper's recipe to its end: the most steps of two finished
    page = report.page(str(REPO / "params.yaml"), str(tmp_path), str(tmp_path), str(runs), "K25")
    assert scorecard.lines(page, TOLERANCE)[0].run.name == "K25-paper"


def test_a_run_not_yet_evaluated_gives_way_for_the_numbers_it_has_not_scored(tmp_path: Path) -> None:
    """A fast run that finished its training but has not been evaluated yet (its evaluation is a later call) scores
    Figure 7's K = 25 point by its monitor, and leaves Tables 1-2 to the evaluated paper-recipe run, which would
    otherwise lose its measured numbers to it; with no evaluated run, the line names the run that has none."""
    runs = tmp_path / "runs"
    fast = _run(runs, "K25-fast", "fast", epochs=1.5256)
    (fast / "metrics.json").unlink()
    train = json.loads((fast / "train.json").read_text())
    (fast / "train.json").write_text(json.dumps({**train, "steps_done": 23000, "epochs_planned": 1.5256}))
    page = report.page(str(REPO / "params.yaml"), "none", "none", str(runs), "K25")
    psnr = scorecard.lines(page, TOLERANCE)[0]
    assert psnr.run.name == "K25-fast" and psnr.measured == ()
    _run(runs, "K25-paper", "paper", _paper_metrics(-0.5))
    page = report.page(str(REPO / "params.yaml"), "none", "none", str(runs), "K25")
    found = {line.item: line for line in scorecard.lines(page, TOLERANCE)}
    for item in ("Table 1, PSNR", "Table 1, SSIM", "Table 2, IFC"):
        assert found[item].run.name == "K25-paper" and len(found[item].measured) == found[item].published
    assert found["Figure 7, K = 25"].run.name == "K25-fast"
    assert found["Table 3, with residual"].run.name == "K25-paper"


def test_a_number_the_paper_prints_in_several_places_counts_once_in_the_totals(tmp_path: Path) -> None:
    """Table 1's Set5 x3 PSNR of RL-CSC is also Figure 1's K = 25 point and Figure 7's K = 25 point, and Figure 1's
    K = 48 point is Figure 7's: each of those rows counts it, the totals once; each point is set against the run
    of its own K."""
    t1, f1, f7 = table("table1"), table("figure1"), table("figure7")
    set5_x3 = t1.query("method == 'RL-CSC' and dataset == 'Set5' and scale == 3").psnr.iloc[0]
    assert (set5_x3 == f1.query("model == 'RL-CSC' and layers == 30").psnr.iloc[0]
            == f7.query("recursions == 25").psnr.iloc[0])
    assert f1.query("model == 'RL-CSC' and layers == 53").psnr.iloc[0] == f7.query("recursions == 48").psnr.iloc[0]
    runs = tmp_path / "runs"
    _run(runs, "K25-fast", "fast", _paper_metrics(0.0), epochs=35.0)
    k48 = _run(runs, "K48-fast", "fast", {"Set5": {"x3": {"psnr": 34.16 - 0.3}}}, epochs=35.0)
    train = json.loads((k48 / "train.json").read_text())
    train["model"] |= {"recursions": 48, "depth": 53}
    (k48 / "train.json").write_text(json.dumps(train))
    page = report.page(str(REPO / "params.yaml"), str(tmp_path), str(tmp_path), str(runs), "K25")
    lines = scorecard.lines(page, TOLERANCE)
    found = {line.item: line for line in lines}
    assert found["Figure 1, K = 25"].matched == found["Figure 7, K = 25"].matched == 1
    for item in ("Figure 1, K = 48", "Figure 7, K = 48"):
        assert found[item].run.name == "K48-fast" and found[item].differences == pytest.approx((-0.3,))
    totals = scorecard.totals(lines)
    assert totals.published == sum(line.published for line in lines) - 3
    assert totals.measured == sum(len(line.differences) for line in lines) - 3
    assert totals.matched == sum(line.matched for line in lines) - 2
    assert [items for _, items in totals.shared] == [("Table 1, PSNR", "Figure 1, K = 25", "Figure 7, K = 25"),
                                                     ("Figure 1, K = 48", "Figure 7, K = 48")]
    t2, t3 = table("table2"), table("table3")
    # Figure 1's two RL-CSC points add nothing to Table 1's and Figure 7's numbers
    distinct = 2 * len(t1.query("method == 'RL-CSC'")) + len(t2.query("method == 'RL-CSC'")) + len(t3) + len(f7) - 1
    assert totals.published == distinct


def test_the_recorded_paper_run_is_scored_as_it_stands() -> None:
    page = report.page(str(REPO / "params.yaml"), "none", "none", str(REPO / "runs"), "K25")
    found = {line.item: line for line in scorecard.lines(page, TOLERANCE)}
    run = found["Table 1, PSNR"].run
    train = json.loads((REPO / "runs" / "K25-paper" / "train.json").read_text())
    assert run.name == "K25-paper" and run.extent() == f"{train['epochs_done']:g} of {train['epochs_planned']:g} epochs"
    metrics = json.loads((REPO / "runs" / "K25-paper" / "metrics.json").read_text())
    t1 = table("table1").query("method == 'RL-CSC'")
    diffs = [metrics[r.dataset][f"x{r.scale}"]["psnr"] - r.psnr for r in t1.itertuples()]
    assert found["Table 1, PSNR"].differences == pytest.approx(diffs)
    epoch1 = found["Table 3, with residual"]
    assert len(epoch1.differences) == 1 and epoch1.published == 4
    (cost,) = [c for c in scorecard.costs(page) if c.experiment == "K25"]
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


def test_a_run_too_short_to_time_its_steps_gives_no_speed(tmp_path: Path) -> None:
    """A run that synced with the host fewer than twice records `ms_per_step` null: the cost of its network is its
    steps left at the speed of another run scaled by the arithmetic, and its steps done still count."""
    shutil.copytree(REPO / "runs" / "K25-paper", tmp_path / "K25-paper", ignore=shutil.ignore_patterns("*.pt"))
    for name, status in (("K25_noresidual-fast", "completed"), ("K48-fast", "interrupted")):
        folder = _run(tmp_path, name, "fast")
        train = json.loads((folder / "train.json").read_text())
        if name.startswith("K48"):
            train["train"]["recursions"] = train["model"]["recursions"] = 48
        else:
            train["train"]["residual"] = train["model"]["residual"] = False
            status = "diverged at epoch 1, step 50; the weights of step 0 kept"
        (folder / "train.json").write_text(json.dumps({**train, "status": status, "steps_done": 50,
                                                       "ms_per_step": None}))
    page = report.page(str(REPO / "params.yaml"), "none", "none", str(tmp_path), "K25")
    fast_steps = yaml.safe_load((REPO / "params.yaml").read_text())["budgets"]["fast"]["train"]["max_steps"]
    cost = {c.experiment: c for c in scorecard.costs(page, "fast")}
    assert (cost["K25_noresidual"].steps_left, cost["K25_noresidual"].hours) == (0, 0.0)
    assert cost["K48"].steps_left == fast_steps - 50
    assert cost["K48"].hours > cost["K25"].hours * (fast_steps - 50) / fast_steps  # deeper: slower per step
    assert cost["K48"].basis == "K25-paper, scaled by the arithmetic"


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


def test_a_number_within_the_tolerance_matches_its_bounds_included() -> None:
    """A difference of exactly the tolerance matches; one beyond it, of either sign, does not."""
    keys = ((1,), (2,), (3,), (4,))
    line = scorecard.Line("x", "psnr", keys, keys, (0.25, -0.25, 0.5, -0.5), 0.25, None)
    assert line.matched == 2 and line.spread() == "-0.50 to +0.50 dB"
    assert scorecard.totals([line]).matched == 2


def test_table3_sets_the_end_of_each_epoch_against_the_paper(tmp_path: Path) -> None:
    """Table 3's points are the monitor's Set5 x3 PSNR at the end of epochs 1, 5, 10 and 13 (paper: 33.24 and
    33.61 dB after epochs 1 and 5): a snapshot within an epoch is none of them, and a difference is the run's
    PSNR minus the paper's."""
    folder = _run(tmp_path / "runs", "K25-paper", "paper")
    train = json.loads((folder / "train.json").read_text())
    psnr = {0.5: 20.0, 1.0: 33.44, 1.5: 40.0, 5.0: 33.31}
    train["curve"] = [{**train["curve"][0], "epoch": e, "psnr": p} for e, p in psnr.items()]
    (folder / "train.json").write_text(json.dumps(train))
    page = report.page(str(REPO / "params.yaml"), "none", "none", str(tmp_path / "runs"), "K25")
    line = {line.item: line for line in scorecard.lines(page, TOLERANCE)}["Table 3, with residual"]
    assert line.published == 4 and line.differences == pytest.approx((0.2, -0.3)) and line.matched == 0


def test_the_run_that_trained_the_most_steps_counts(tmp_path: Path) -> None:
    """Of two paper-scale runs of the main network, the scorecard sets the one that trained further against the
    paper, whichever budget or name it has."""
    runs = tmp_path / "runs"
    for name, steps, shift in (("K25-a", 30000, 0.0), ("K25-b", 15076, 0.5), ("K25-c", 2000, -0.5)):
        folder = _run(runs, name, "paper", _paper_metrics(shift))
        train = json.loads((folder / "train.json").read_text())
        (folder / "train.json").write_text(json.dumps({**train, "steps_done": steps}))
    page = report.page(str(REPO / "params.yaml"), "none", "none", str(runs), "K25")
    psnr = scorecard.lines(page, TOLERANCE)[0]
    assert psnr.run.name == "K25-a" and psnr.matched == 12


def test_the_cost_of_the_rest_follows_each_experiment_s_plan_and_arithmetic(tmp_path: Path) -> None:
    """From the recorded K25-paper run (1 of 35 epochs): every other network of params.yaml still needs its whole
    plan (35 epochs; K25_noresidual stops after epoch 14, as Table 3), seeds counted once, and a deeper network
    costs more per step."""
    shutil.copytree(REPO / "runs" / "K25-paper", tmp_path / "K25-paper", ignore=shutil.ignore_patterns("*.pt"))
    page = report.page(str(REPO / "params.yaml"), "none", "none", str(tmp_path), "K25")
    cost = {c.experiment: c for c in scorecard.costs(page)}
    per_epoch = json.loads((tmp_path / "K25-paper" / "train.json").read_text())["steps_per_epoch"]
    assert set(cost) == {"K25", "K15", "K20", "K48", "K25_noresidual", "K15_m128"}
    assert cost["K25_noresidual"].steps_left == 14 * per_epoch and cost["K48"].steps_left == 35 * per_epoch
    assert cost["K25"].steps_left == 34 * per_epoch and "K25-paper" in cost["K25"].basis
    per_step = {name: c.hours / c.steps_left for name, c in cost.items()}
    assert per_step["K15_m128"] < per_step["K15"] < per_step["K20"] < per_step["K25"] < per_step["K48"]
    assert "scaled by the arithmetic" in cost["K48"].basis


def test_the_fast_budget_s_cost_is_its_own_plan_at_the_measured_speed(tmp_path: Path) -> None:
    """Under the fast budget every experiment plans `max_steps`; a fast run of a network counts its steps, and its
    ms per step, for the fast budget alone: the paper recipe's cost still counts only paper-budget runs."""
    fast_steps = yaml.safe_load((REPO / "params.yaml").read_text())["budgets"]["fast"]["train"]["max_steps"]
    _run(tmp_path, "K25-paper", "paper")
    page = report.page(str(REPO / "params.yaml"), "none", "none", str(tmp_path), "K25")
    paper, fast = ({c.experiment: c for c in scorecard.costs(page, budget)} for budget in ("paper", "fast"))
    ms = json.loads((tmp_path / "K25-paper" / "train.json").read_text())["ms_per_step"]
    assert {c.steps_left for c in fast.values()} == {fast_steps}  # K25_noresidual's 14 epochs are longer
    assert fast["K25"].hours == pytest.approx(fast_steps * ms / 3.6e6) and "K25-paper" in fast["K25"].basis
    folder = _run(tmp_path, "K25-fast", "fast")
    train = json.loads((folder / "train.json").read_text())
    (folder / "train.json").write_text(json.dumps({**train, "steps_done": 5000, "ms_per_step": 2 * ms}))
    page = report.page(str(REPO / "params.yaml"), "none", "none", str(tmp_path), "K25")
    now = {c.experiment: c for c in scorecard.costs(page, "fast")}
    assert now["K25"].steps_left == fast_steps - 5000 and "K25-fast" in now["K25"].basis
    assert now["K25"].hours == pytest.approx((fast_steps - 5000) * 2 * ms / 3.6e6)
    assert {c.experiment: c for c in scorecard.costs(page, "paper")}["K25"] == paper["K25"]
    blocks = yaml.safe_load((REPO / "params.yaml").read_text())
    del blocks["budgets"]["fast"]  # a params file without the budget: no cost under it, the paper's still
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(blocks))
    page = report.page(str(tmp_path / "params.yaml"), "none", "none", str(tmp_path), "K25")
    assert scorecard.costs(page, "fast") == [] and len(scorecard.costs(page, "paper")) == len(paper)


def test_a_run_s_numbers_in_words(tmp_path: Path) -> None:
    """What the pages say of a run: the share of its steps clipped (over all its steps, not per snapshot), the
    training minutes when it first reached a PSNR (reaching it exactly counts), its final Set5 x3 PSNR (its
    evaluation's, else its monitor's last), how far it trained, a difference's sign and a commit's digits."""
    folder = _run(tmp_path, "K25-paper", "paper", {"Set5": {"x3": {"psnr": 33.5}}})
    run = report.recorded_runs(tmp_path)[0]
    curve = [{"step": 1000, "seconds": 120.0, "psnr": 33.0, "clipped_fraction": 1.0, "steps": 1000},
             {"step": 1010, "seconds": 180.0, "psnr": 34.2, "clipped_fraction": 0.0, "steps": 10}]
    run = report.Run(run.name, True, {**run.train, "curve": curve}, run.metrics, folder)
    assert run.clipped_share() == pytest.approx(1000 / 1010)
    unclipped = [{**c, "clipped_fraction": None} for c in curve]
    train = {**run.train, "curve": unclipped, "train": {**run.config, "clip": None}}
    assert report.Run(run.name, True, train, run.metrics, folder).clipped_share() is None
    assert run.minutes_to(34.2) == 3 and run.minutes_to(33.0) == 2 and run.minutes_to(34.21) is None
    assert run.last_psnr() == 33.5 and report.Run(run.name, True, run.train, None, folder).last_psnr() == 34.2
    assert report.Run(run.name, True, {**run.train, "epochs_planned": 35.0}, None, folder).extent() == "1 of 35 epochs"
    finished = {**run.train, "epochs_done": 4.0, "epochs_planned": 4.0}
    assert report.Run(run.name, True, finished, None, folder).extent() == "4 of 4 epochs"
    by_steps = {**run.train, "steps_done": 15076, "epochs_done": 1.0, "steps_planned": 23000, "epochs_planned": 1.5256}
    assert report.Run(run.name, True, by_steps, None, folder).extent() == "15,076 of 23,000 steps, 1 of 1.53 epochs"
    assert [report.signed(v, 2) for v in (-0.004, 0.004, -0.006, 0.1)] == ["+0.00", "+0.00", "-0.01", "+0.10"]
    assert report.commit({"commit": "0123456789abcdef-dirty"}) == "0123456789-dirty"
    assert report.commit({"commit": "0123456789abcdef"}) == "0123456789" and report.commit({}) == "unknown"


def test_a_runs_table_names_the_machine_as_far_as_the_call_recorded_it() -> None:
    cpu = {"cpu": "AMD EPYC (avx2)", "cpu_cores": 2}
    assert report.machine("NVIDIA H100 80GB HBM3", cpu) == "NVIDIA H100 80GB HBM3"
    assert report.machine(None, cpu) == "cpu: AMD EPYC (avx2), 2 cores"
    limited = {**cpu, "isa_limits": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}
    assert report.machine(None, limited) == ("cpu: AMD EPYC (avx2), 2 cores, ATEN_CPU_CAPABILITY=avx2, "
                                             "ONEDNN_MAX_CPU_ISA=AVX2")
    assert report.machine(None, {"cpu_cores": 2, "isa_limits": {}}) == "cpu, 2 cores"  # recorded before the CPU's name
    assert report.machine(None, {}) == "cpu"
    assert report.precisions("bf16", "tf32") == ", trained in bf16, scored in tf32"  # what the machine computed in
    assert report.precisions("fp32", "winograd") == ", scored in winograd" and report.precisions(None, "fp32") == ""


def test_a_difference_is_within_the_tolerance_as_it_prints() -> None:
    """"Within 0.1 dB" holds for every difference that prints as 0.10 dB at the paper's two decimals: 34.21 against
    34.11 (0.10000000000000142 in floats), and 0.104; not 0.106, which prints as 0.11. SSIM at its four decimals
    alike; and each distinct number once in the totals, by the same rule."""
    keys = tuple(scorecard.number(30, "Set5", s, "psnr") for s in (2, 3, 4)) * 2
    line = scorecard.Line("Table 1, PSNR", "psnr", keys, keys, (34.21 - 34.11, 0.106, 0.104, 34.11 - 34.21, -0.106,
                                                                float("nan")), 0.1, None)
    assert line.matched == 3
    ssim = scorecard.Line("Table 1, SSIM", "ssim", keys[:3], keys[:3], (0.00204, -0.00206, 0.002), 0.002, None)
    assert ssim.matched == 2
    for metric, half in (("ssim", 0.00205), ("ifc", 0.0505)):  # half-way: as `signed` rounds it, beyond the bound
        halfway = scorecard.Line("x", metric, keys[:1], keys[:1], (half,), report.EXPLAIN[metric], None)
        assert halfway.matched == 0 and float(halfway.spread()) > report.EXPLAIN[metric], (metric, halfway.spread())
    assert scorecard.totals([line]).matched == 2  # each key's first value: 0.10, 0.11 and 0.10 as printed


def test_the_late_range_spans_the_last_snapshots_of_the_epoch_a_run_ended_in(tmp_path: Path) -> None:
    """The range of the Set5 x3 PSNR over a run's last snapshots that lie in the epoch of its last one (epoch 1 runs
    from just after 0 to 1 inclusive): none of the previous epoch, at most `n`, none where fewer than two."""
    folder = _run(tmp_path, "K25-paper", "paper")
    train = json.loads((folder / "train.json").read_text())
    psnr = {0.9: 40.0, 1.0: 33.0, 1.2: 20.0, 1.4: 33.5, 1.6: 33.1, 1.8: 33.4, 2.0: 33.2}
    curve = [{**train["curve"][0], "epoch": e, "step": int(100 * e), "psnr": p} for e, p in psnr.items()]
    run = report.Run("K25-paper", True, {**train, "curve": curve}, None, folder)
    late = scorecard.late_range(run, n=4)
    assert (late.epoch, late.steps, late.low, late.high) == (2, (140, 160, 180, 200), 33.1, 33.5)
    assert late.range == pytest.approx(0.4)
    assert scorecard.late_range(run, n=10).low == 20.0  # epoch 1's snapshots never count for epoch 2
    assert scorecard.late_range(report.Run("K25-paper", True, {**train, "curve": curve[:3]}, None, folder)) is None
    recorded = report.recorded_runs(REPO / "runs")[0]
    ended = [c for c in recorded.train["curve"] if np.ceil(c["epoch"]) == np.ceil(recorded.train["curve"][-1]["epoch"])]
    psnr_late = [c["psnr"] for c in ended[-scorecard.LAST:]]
    assert scorecard.late_range(recorded).range == pytest.approx(max(psnr_late) - min(psnr_late))


def test_a_matched_table3_point_says_whether_every_late_snapshot_would_match_it(tmp_path: Path) -> None:
    """Paper after epoch 5: 33.61 dB. A run that ends epoch 5 at 33.65 matches it; its last snapshots of that epoch
    span 33.55 to 33.65, all within 0.1 dB (held), or 33.45 to 33.65, not all (the match hangs on the step)."""
    folder = _run(tmp_path / "runs", "K25-paper", "paper")
    train = json.loads((folder / "train.json").read_text())
    for low, held in ((33.55, True), (33.45, False)):
        psnr = {1.0: 33.3, 4.5: low, 4.8: 33.6, 5.0: 33.65}
        train["curve"] = [{**train["curve"][0], "epoch": e, "step": int(1000 * e), "psnr": p} for e, p in psnr.items()]
        (folder / "train.json").write_text(json.dumps(train))
        page = report.page(str(REPO / "params.yaml"), "none", "none", str(tmp_path / "runs"), "K25")
        lines = scorecard.lines(page, TOLERANCE)
        run = lines[3].run
        late = scorecard.late_range(run)
        assert (late.epoch, late.low) == (5, low)
        (point,) = scorecard.held(run, lines, late)  # epoch 1's match (+0.06) lies before the late range
        assert (point.item, point.epoch, point.held) == ("Table 3, with residual", 5, held)
        assert point.published == pytest.approx(33.61)


def test_what_is_not_reproduced_is_sorted_by_why(tmp_path: Path) -> None:
    """Of the recorded paper run (1 of 35 epochs): the numbers it measured beyond the tolerance, by a run short of
    its plan; Table 3's later epochs, which it has not reached; the networks no paper-scale run has trained."""
    page = report.page(str(REPO / "params.yaml"), "none", "none", str(REPO / "runs"), "K25")
    lines = scorecard.lines(page, TOLERANCE)
    totals, gaps = scorecard.totals(lines), scorecard.gaps(lines)
    assert gaps.outside == totals.measured - totals.matched > 0
    assert [r.name for r in gaps.short] == ["K25-paper"]
    assert [line.item for line in gaps.unreached] == ["Table 3, with residual"]
    assert gaps.missing == ("Table 3, no residual", "Figure 1, K = 48", "Figure 7, K = 15", "Figure 7, K = 20",
                            "Figure 7, K = 48")
    finished = _run(tmp_path / "runs", "K25-fast", "fast", _paper_metrics(0.5), epochs=35.0)
    page = report.page(str(REPO / "params.yaml"), "none", "none", str(finished.parent), "K25")
    gaps = scorecard.gaps(scorecard.lines(page, TOLERANCE))
    assert gaps.outside > 0 and gaps.short == ()  # beyond the tolerance after its whole plan: not short of it


def _network(folder: Path, **model: object) -> None:
    """Make the recorded run in `folder` one of another network (`model`'s keys, in its train block too)."""
    train = json.loads((folder / "train.json").read_text())
    train["model"] |= model
    train["train"] |= {k: v for k, v in model.items() if k in train["train"]}
    (folder / "train.json").write_text(json.dumps(train))


def test_only_the_paper_s_network_counts_whichever_the_pages_call_main(tmp_path: Path) -> None:
    """The published RL-CSC numbers are of K = 25 without biases: a run with biases, or a K = 48 run made the
    pages' main experiment, counts for none of Tables 1-3 (the K = 48 run for its own point of Figures 1 and 7), and
    the pages set only runs of the main network, biases alike, beside the paper's RL-CSC."""
    runs = tmp_path / "runs"
    _network(_run(runs, "K25-bias", "fast", _paper_metrics(0.0), epochs=35.0), bias=True)
    page = report.page(str(REPO / "params.yaml"), "none", "none", str(runs), "K25")
    assert page.main_runs() == [] and page.sweep_runs() == [] and scorecard.lines(page, TOLERANCE)[0].run is None
    _network(_run(runs, "K48-fast", "fast", _paper_metrics(0.0), epochs=35.0), recursions=48, depth=53)
    page = report.page(str(REPO / "params.yaml"), "none", "none", str(runs), "K48")
    assert [r.name for r in page.main_runs()] == ["K48-fast"]
    found = {line.item: line for line in scorecard.lines(page, TOLERANCE)}
    assert found["Table 1, PSNR"].run is None and found["Figure 7, K = 48"].run.name == "K48-fast"


def test_a_run_without_a_set5_x3_score_is_not_measured(tmp_path: Path) -> None:
    """A counting run of Figure 7's K = 15 that has neither an evaluation nor a monitor's snapshot (it diverged at
    once): its point is published, not measured, and the totals say so."""
    folder = _run(tmp_path, "K15-paper", "paper")
    (folder / "metrics.json").unlink()
    _network(folder, recursions=15, depth=20)
    train = json.loads((folder / "train.json").read_text())
    (folder / "train.json").write_text(json.dumps({**train, "curve": []}))
    page = report.page(str(REPO / "params.yaml"), "none", "none", str(tmp_path), "K25")
    lines = scorecard.lines(page, TOLERANCE)
    k15 = {line.item: line for line in lines}["Figure 7, K = 15"]
    assert k15.run.name == "K15-paper" and (k15.published, k15.measured, k15.differences) == (1, (), ())
    assert scorecard.totals(lines).measured == 0


def test_a_runs_table_names_where_a_run_was_scored_where_it_was_not_where_it_trained(tmp_path: Path) -> None:
    """runs/K25-paper trained on an H100; scored again by a later call on a CPU from another commit, its row names
    both machines and both commits, each with its precision."""
    folder = _run(tmp_path, "K25-paper", "paper")
    env = json.loads((folder / "environment.json").read_text())
    env["calls"].append({"gpu": None, "cpu": "AMD EPYC (avx2)", "cpu_cores": 2, "commit": "abcdef0123456789",
                         "steps_before": 15076, "steps_after": 15076, "evaluated": True})
    (folder / "environment.json").write_text(json.dumps(env))
    evaluation = json.loads((folder / "evaluation.json").read_text())
    (folder / "evaluation.json").write_text(json.dumps({**evaluation, "computed_in": "winograd"}))
    (run,) = report.recorded_runs(tmp_path)
    row = run.row()
    assert row["machine"] == ("NVIDIA H100 80GB HBM3, trained in bf16; scored on cpu: AMD EPYC (avx2), 2 cores, "
                              "scored in winograd")
    assert row["commit"] == "6d459ddc9f (trained); abcdef0123 (scored)"
    (same,) = report.recorded_runs(REPO / "runs")  # trained and scored on one machine, from one commit
    assert same.row()["machine"] == "NVIDIA H100 80GB HBM3, trained in bf16, scored in tf32"
    assert same.row()["commit"] == "6d459ddc9f"


def test_a_run_without_the_residual_says_whether_it_converged(tmp_path: Path) -> None:
    """Table 3's claim in words, for each way a run without the residual connection can end: a finite loss and an
    output better than the bicubic input (set beside the same network and budget with the residual; so far, while
    it trains), or not better; an output collapsed to 0, as the paper's Table 3; a divergence."""
    _run(tmp_path, "K25-fast", "fast", {"Set5": {"x3": {"psnr": 34.05}}})
    _run(tmp_path, "K25-other", "paper", {"Set5": {"x3": {"psnr": 33.0}}})  # another budget: not its twin
    _run(tmp_path, "K25_noresidual-fast", "fast", {"Set5": {"x3": {"psnr": 31.8}}})
    runs = {r.name: r for r in report.recorded_runs(tmp_path)}
    nores = runs["K25_noresidual-fast"]
    nores = replace(nores, train={**nores.train, "model": {**nores.model, "residual": False}, "epochs_done": 35.0})
    everyone = [runs["K25-other"], runs["K25-fast"], nores]
    said = report.convergence(nores, everyone, 30.39)
    assert said == ("Its loss stayed finite, and it ended at 31.80 dB, +1.41 dB from its bicubic input (30.39 dB) "
                    "and -2.25 dB from K25-fast (34.05 dB), the same network and budget with the residual. It "
                    "converged, to an output better than its input: the fast budget's recipe trains the network "
                    "without the residual connection, where the paper reports that its own could not (\"cannot even "
                    "converge\").")
    assert "from K25-fast" not in report.convergence(nores, [runs["K25-other"], nores], 30.39)
    paper = replace(nores, train={**nores.train, "budget": "paper"})
    assert report.convergence(paper, everyone, 30.39).endswith(
        "-1.20 dB from K25-other (33.00 dB), the same network and budget with the residual. It converged, to an "
        "output better than its input, against the paper's claim that it \"cannot even converge\".")
    training = replace(nores, train={**nores.train, "epochs_done": 1.0})
    assert report.convergence(training, everyone, 30.39) == (
        "Its loss stayed finite, and it stands at 31.80 dB, +1.41 dB from its bicubic input (30.39 dB) and -2.25 dB "
        "from K25-fast (34.05 dB), the same network and budget with the residual. So far it converges, to an output "
        "better than its input; its run has not finished.")
    below = replace(nores, metrics={"Set5": {"x3": {"psnr": 30.0}}})
    assert report.convergence(below, everyone, 30.39).endswith(
        "-0.39 dB from its bicubic input (30.39 dB) and -4.05 dB from K25-fast (34.05 dB), the same network and budget "
        "with the residual. Its output is no better than its input.")
    collapsed = {**paper.train, "curve": [{**nores.train["curve"][-1], "psnr": 6.54, "zero_fraction": 1.0}]}
    assert report.convergence(replace(nores, train=collapsed, metrics=None), everyone, 30.39) == (
        "It did not converge: its output collapsed, 100.0% of its output pixels rounding to 0 at its last snapshot "
        "(6.54 dB), as the paper reports (\"cannot even converge\").")
    diverged = {**nores.train, "status": "diverged at epoch 1, step 900; the weights of step 0 kept"}
    assert report.convergence(replace(nores, train=diverged), everyone, 30.39) == (
        "It did not converge: its loss or gradient became non-finite, as the paper reports of its own recipe.")
    early = {**diverged, "curve": [], "steps_done": 0}  # before its first snapshot: its divergence is its result
    assert report.convergence(replace(nores, train=early, metrics=None), everyone, 30.39) == (
        "It did not converge: its loss or gradient became non-finite, as the paper reports of its own recipe.")
    unscored = {**nores.train, "curve": [], "epochs_done": 0.01}  # cut short before its first snapshot
    assert report.convergence(replace(nores, train=unscored, metrics=None), everyone, 30.39) == (
        "Whether it converges is not known yet: it has no snapshot.")


def test_the_cost_of_the_rest_counts_rl_csc_networks_alone(tmp_path: Path) -> None:
    """An experiment of another network (`arch: drrn`) in params.yaml, and its recorded run, are left out of the cost
    of the rest, as out of every page."""
    shutil.copytree(REPO / "runs" / "K25-paper", tmp_path / "K25-paper", ignore=shutil.ignore_patterns("*.pt"))
    folder = _run(tmp_path, "DRRN9-paper", "paper")
    train = json.loads((folder / "train.json").read_text())
    train["model"] = {"units": 9, "features": 128, "channels": 1, "arch": "drrn", "parameters": 297_216, "depth": 20}
    (folder / "train.json").write_text(json.dumps(train))
    blocks = yaml.safe_load((REPO / "params.yaml").read_text())
    blocks["experiments"]["DRRN9"] = {"arch": "drrn", "units": 9}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(blocks))
    page = report.page(str(tmp_path / "params.yaml"), "none", "none", str(tmp_path), "K25")
    assert [r.name for r in page.runs] == ["K25-paper"] and [r.name for r in page.others] == ["DRRN9-paper"]
    assert "DRRN9" not in {c.experiment for c in scorecard.costs(page)}
    assert scorecard.lines(page, TOLERANCE)[0].run.name == "K25-paper"


def test_the_cost_of_the_rest_counts_this_pipeline_s_paper_scale_runs(tmp_path: Path) -> None:
    """A run of this pipeline under a paper-scale budget (`dvc exp run -S budget=fast` on a GPU) times its steps and
    counts its progress as a recorded run does."""
    fast_steps = yaml.safe_load((REPO / "params.yaml").read_text())["budgets"]["fast"]["train"]["max_steps"]
    folder = _run(tmp_path / "models", "K25", "fast")
    train = json.loads((folder / "train.json").read_text())
    (folder / "train.json").write_text(json.dumps({**train, "steps_done": 5000, "ms_per_step": 30.0}))
    (tmp_path / "runs").mkdir()
    page = report.page(str(REPO / "params.yaml"), str(tmp_path / "results"), str(tmp_path / "models"),
                       str(tmp_path / "runs"), "K25")
    (run,) = page.runs
    assert not run.recorded
    cost = {c.experiment: c for c in scorecard.costs(page, "fast")}
    assert cost["K25"].steps_left == fast_steps - 5000 and cost["K25"].basis.startswith("K25 (")
    assert cost["K25"].hours == pytest.approx((fast_steps - 5000) * 30.0 / 3.6e6)
