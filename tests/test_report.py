"""What the runs tables say of where and from which code a run trained and an evaluation ran, and how far a run's
score in another precision was checked in fp32, all from the files the pipeline writes."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlcsc import report
from rlcsc.data.augment import AugmentParams, augment
from rlcsc.data.patches import PatchParams, make_patches
from rlcsc.device import cpu_description, machine
from rlcsc.provenance import commit
from rlcsc.train import TrainParams, train

REPO = Path(__file__).resolve().parents[1]
K25 = REPO / "runs" / "K25-paper"
VDSR = REPO / "runs" / "VDSR-official"
CALL = {"cpu": "AMD EPYC (avx2)", "cpu_cores": 2, "commit": "0123456789abcdef-dirty"}


def test_a_training_call_records_its_commit(mirror: Path, tmp_path: Path) -> None:
    """Each call in train.json's `calls` names the commit it ran (`provenance.commit`) beside its machine."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:140, 0:150]
    img = 128 + 90 * np.sin(xx / 5) * np.cos(yy / 7) + rng.normal(0, 10, (140, 150))
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(tmp_path / "0.png")
    augment([tmp_path / "0.png"], tmp_path / "aug", AugmentParams(flips=("none",), factors=(1.0,)), jobs=1)
    make_patches(tmp_path / "aug", tmp_path / "patches", PatchParams(chunk=8), jobs=1)
    tiny = TrainParams(recursions=2, features=4, codes=8, pairs=32, batch=8, epochs=1, lr=0.01, checkpoint_every=4,
                       log_every=2, compile=False, device="cpu")
    summary = train(tiny, tmp_path / "patches", mirror, tmp_path / "run")
    (call,) = json.loads((tmp_path / "run" / "train.json").read_text())["calls"]
    assert call["commit"] == commit() == summary["calls"][0]["commit"] and call["cpu"] == cpu_description()


def test_an_evaluation_records_where_it_ran(mirror: Path, tmp_path: Path) -> None:
    """`rlcsc evaluate`'s evaluation.json holds where it was scored: the machine as `device.machine` describes the
    device it computed on (the CPU for bicubic, which runs no network), the commit and the date."""
    from rlcsc.cli import main

    out = tmp_path / "bicubic"
    assert main(["evaluate", "--method", "bicubic", "--raw", str(mirror), "--out", str(out), "--datasets", "Set5",
                 "--scales", "3", "--no-ifc"]) == 0
    env = json.loads((out / "evaluation.json").read_text())["environment"]
    here = machine("cpu")
    assert {k: env[k] for k in ("gpu", "cpu", "cpu_cores")} == {k: here[k] for k in ("gpu", "cpu", "cpu_cores")}
    assert env["commit"] == commit() and env["date"]


def _pipeline_run(tmp_path: Path, calls: list[dict]) -> report.Run:
    """runs/K25-paper's training record as this pipeline's run, with `calls` as its train.json's."""
    train_ = {**json.loads((K25 / "train.json").read_text()), "calls": calls, "device": "cpu"}
    return report.Run("K25", False, train_, None, tmp_path)


def test_a_pipeline_run_names_the_commit_its_training_recorded(tmp_path: Path) -> None:
    row = _pipeline_run(tmp_path, [{"steps": 1, **CALL, "commit": "fedcba9876543210"}, {"steps": 2, **CALL}]).row()
    assert row["commit"] == "0123456789-dirty" and row["machine"].startswith("cpu: AMD EPYC (avx2), 2 cores")
    old = _pipeline_run(tmp_path, [{"steps": 1, "cpu": "AMD EPYC (avx2)", "cpu_cores": 2}])  # before calls had one
    assert old.row()["commit"] == "unknown"


def _pipeline_evaluation(tmp_path: Path, environment: dict | None) -> report.Measured:
    """runs/VDSR-official's evaluation as this pipeline's (results/VDSR/), with `environment` in its evaluation.json."""
    folder = tmp_path / "VDSR"
    shutil.copytree(VDSR, folder, ignore=shutil.ignore_patterns("*.pt", "environment.json"))
    evaluation = json.loads((folder / "evaluation.json").read_text())
    evaluation = {**evaluation, "environment": environment} if environment else evaluation
    (folder / "evaluation.json").write_text(json.dumps(evaluation))
    (found,) = report.measured_methods(tmp_path, tmp_path / "none")
    return found


def test_a_pipeline_evaluation_names_the_machine_and_commit_it_recorded(tmp_path: Path) -> None:
    measured = _pipeline_evaluation(tmp_path, {**CALL, "gpu": None})
    assert not measured.recorded and measured.evaluated_in() == "fp32"
    row = measured.row()
    assert (row["machine"], row["commit"]) == ("cpu: AMD EPYC (avx2), 2 cores", "0123456789-dirty")
    gpu = _pipeline_evaluation(tmp_path / "gpu", {**CALL, "gpu": "NVIDIA H100 80GB HBM3", "commit": "abc"}).row()
    assert (gpu["machine"], gpu["commit"]) == ("NVIDIA H100 80GB HBM3", "abc")
    old = _pipeline_evaluation(tmp_path / "old", None).row()  # written before evaluation.json recorded them
    assert (old["machine"], old["commit"]) == ("unknown", "unknown")


def test_a_run_scored_in_tf32_is_checked_in_fp32_by_its_later_benchmarks(tmp_path: Path) -> None:
    """runs/K25-paper (scored in tf32 on a GPU) holds CPU benchmarks of the same model in fp32: each of their cells
    beside its evaluation's; a benchmark older than the evaluation measured another model and counts for none."""
    folder = tmp_path / "K25-paper"
    shutil.copytree(K25, folder, ignore=shutil.ignore_patterns("*.pt"))
    (run,) = report.recorded_runs(tmp_path)
    metrics = json.loads((K25 / "metrics.json").read_text())
    found = run.fp32_rescored()
    assert run.evaluated_in() == "tf32" and run.scored_on() == "NVIDIA H100 80GB HBM3" and found
    for cell in found:
        bench = json.loads((K25 / cell["file"]).read_text())
        assert cell["fp32"] == bench["variants"]["fp32"]["quality"][cell["dataset"]]["psnr"]
        assert cell["scored"] == metrics[cell["dataset"]][f"x{cell['scale']}"]["psnr"]
        assert cell["commit"] == report.commit(bench["machine"]) != "unknown"
        assert abs(cell["fp32"] - cell["scored"]) < 0.01
    for path in folder.glob("inference*.json"):
        bench = json.loads(path.read_text())
        bench["machine"]["date"] = "2000-01-01T00:00:00+00:00"
        path.write_text(json.dumps(bench))
    assert run.fp32_rescored() == []
    assert replace(run, environment=None).fp32_rescored() == []  # no call that evaluated: nothing to compare


def test_an_empty_runs_table_says_no_paper_scale_run_reached_the_page() -> None:
    """Each page gives the quick budget's runs a section of their own: its main runs table, when empty, says that no
    paper-scale run has reached the page, not that no run has (quick runs may stand below it)."""
    assert report.sources([]) == "No paper-scale run of this project has reached this page yet."


@pytest.mark.parametrize("tmp_dir_length", [0, 120], ids=["short", "too-long-for-a-socket"])
def test_a_report_notebook_s_kernel_talks_over_sockets_only_this_user_may_open(
        tmp_path: Path, tmp_dir_length: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not over TCP on localhost, which any local process may reach (ipykernel warns of it on every page): over
    Unix sockets in a temporary folder of mode 700, removed when the page is written. Where the temporary
    folders' path is too long for a socket's, the page is still written, over TCP."""
    import nbformat

    if tmp_dir_length:
        long = tmp_path / ("d" * max(1, tmp_dir_length - len(str(tmp_path)) - 1))
        long.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(long))

    cell = ("import os\nfrom ipykernel.kernelapp import IPKernelApp\napp = IPKernelApp.instance()\n"
            "folder = os.path.dirname(app.ip) or '-'\n"
            "print(app.transport, folder, oct(os.stat(folder).st_mode & 0o777) if app.transport == 'ipc' else '-')")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 0", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell(cell)])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nbformat.write(nb, tmp_path / "page.ipynb")
    report.execute_notebook(tmp_path / "page.ipynb", tmp_path / "out.ipynb", {"x": 1})
    transport, folder, mode = nbformat.read(tmp_path / "out.ipynb", 4).cells[-1].outputs[0]["text"].split()
    if tmp_dir_length:
        assert transport == "tcp"
    else:
        assert (transport, mode) == ("ipc", "0o700")
        assert Path(folder).name.startswith("rlcsc-kernel-") and not Path(folder).exists()
