"""Recorded runs end to end on the CPU with the quick budget (scoring Set5 alone, to keep the suite
short): data, training, evaluation and the environment, extended by a second call; controlled
comparisons; how the book labels them (a fast-budget run beside the paper-recipe run too)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
import yaml

from rlcsc import report
from rlcsc.checksums import seal, verify_run
from rlcsc.cli import main
from rlcsc.device import cpu_description
from rlcsc.errors import RlcscError
from rlcsc.evaluate import RESULTS
from rlcsc.inference import describe_model
from rlcsc.provenance import source_hash
from rlcsc.report import Run, commit, paper_set5_x3, psnr_at, recorded_runs, references
from rlcsc.train import TrainParams

REPO = Path(__file__).resolve().parents[1]
FILES = {"model.pt", "checkpoint.pt", "train.json", "train_metrics.json", "metrics.json", "per_image.csv",
         "evaluation.json", "environment.json", "SHA256SUMS"}


def tables(outputs: list[dict]) -> str:
    """The HTML tables a notebook's outputs hold, joined."""
    return "\n".join("".join(o["data"]["text/html"]) for o in outputs if "text/html" in o.get("data", {}))


def row_headings(html: str) -> list[str]:
    """The row headings of the HTML tables `html`, in order."""
    return re.findall(r"<th>([^<]+)</th>\s*<td>", html)


def row_cells(html: str, heading: str) -> list[str]:
    """The cells of the row headed `heading` in the HTML tables `html`."""
    (row,) = re.findall(rf"<th>{re.escape(heading)}</th>\s*((?:<td>[^<]*</td>\s*)+)", html)
    return re.findall(r"<td>([^<]*)</td>", row)


def report_argv(name: str, runs: Path, mirror: Path, out: Path, params: Path = REPO / "params.yaml") -> list[str]:
    """`rlcsc report <name>` with only the recorded runs under `runs` (no pipeline runs), into `out`."""
    (out / "none").mkdir(parents=True, exist_ok=True)
    return ["report", name, "--params", str(params), "--notebooks", str(REPO / "notebooks"),
            "--results", str(out / "none"), "--models", str(out / "none"), "--runs", str(runs),
            "--raw", str(mirror), "--out", str(out)]


def reseal(folder: Path) -> None:
    """Seal a recorded run's `folder` anew after a test changed its files."""
    (folder / "SHA256SUMS").unlink()
    seal(folder)


def page_text(name: str, runs: Path, mirror: Path, out: Path, params: Path = REPO / "params.yaml") -> str:
    """The Markdown that notebook `name` shows, executed by `rlcsc report` over the recorded runs under `runs`."""
    assert main(report_argv(name, runs, mirror, out, params)) == 0
    cells = json.loads((out / f"{name}.ipynb").read_text())["cells"]
    return "".join("".join(o["data"]["text/markdown"]) for c in cells for o in c.get("outputs", [])
                   if "text/markdown" in o.get("data", {}))


@pytest.fixture(scope="module")
def params(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """params.yaml with the quick budget's evaluation on Set5 alone (a quarter of its images)."""
    blocks = yaml.safe_load((REPO / "params.yaml").read_text())
    blocks["budgets"]["quick"]["evaluate"] = {"datasets": ["Set5"]}
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(blocks, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def recorded(mirror: Path, params: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("record")
    argv = ["record", "--params", str(params), "--budget", "quick", "--experiment", "K25",
            "--raw", str(mirror), "--out", str(root / "runs" / "K25-quick"), "--work", str(root / "work"),
            "--steps", "40", "--jobs", "2"]
    assert main(argv) == 0
    return root


def test_a_recorded_run_holds_everything_the_program_wrote(recorded: Path) -> None:
    out = recorded / "runs" / "K25-quick"
    assert {p.name for p in out.iterdir()} == FILES
    (env,) = json.loads((out / "environment.json").read_text())["calls"]
    assert env["steps_before"] == 0 and env["steps_after"] == 40 and env["evaluated"] is True
    assert env["seconds"] > env["seconds_evaluating"] > 0  # the call's wall time, and its evaluation's
    assert env["source_sha256"] == source_hash() and env["torch"] == torch.__version__
    assert env["params"]["budget"] == "quick" and env["params"]["experiment"] == "K25"
    assert env["params"]["train"]["max_steps"] == 40 and env["params"]["train"]["recursions"] == 25
    assert env["params"]["evaluate"]["datasets"] == ["Set5"] and env["gpu"] is None
    assert env["cpu"] == cpu_description() and env["cpu_cores"] == os.cpu_count() and env["commit"] and env["date"]
    train = json.loads((out / "train.json").read_text())
    assert train["steps_done"] == 40 and train["budget"] == "quick" and train["experiment"] == "K25"
    assert train["steps_planned"] == 4 * train["steps_per_epoch"]  # the budget's 4 epochs: --steps stops this call
    assert [c["step"] for c in train["curve"]] == [40]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"Set5"} and set(metrics["Set5"]["x3"]) == {"psnr", "ssim", "ifc"}
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["model"]["experiment"] == "K25" and evaluation["budget"] == "quick"


def test_a_second_call_extends_the_run_on_the_same_data(recorded: Path, mirror: Path, params: Path) -> None:
    out, work = recorded / "runs" / "K25-quick", recorded / "work"
    data_time = (work / "patches" / "inputs.npy").stat().st_mtime_ns
    argv = ["record", "--params", str(params), "--budget", "quick", "--raw", str(mirror),
            "--out", str(out), "--work", str(work), "--jobs", "2"]
    assert main(argv + ["--steps", "60", "--no-evaluate"]) == 0
    train = json.loads((out / "train.json").read_text())
    assert train["steps_done"] == 60 and [c["step"] for c in train["curve"]] == [40, 50, 60]  # eval_every: 50
    assert not [name for name in RESULTS if (out / name).exists()]  # the 40-step model's evaluation is gone
    verify_run(out)
    assert (work / "patches" / "inputs.npy").stat().st_mtime_ns == data_time  # the data were reused
    model_time = (out / "model.pt").stat().st_mtime_ns
    assert main(argv + ["--steps", "60"]) == 0  # already there: evaluation only
    assert (out / "model.pt").stat().st_mtime_ns == model_time
    assert json.loads((out / "evaluation.json").read_text())["model"] == describe_model(out / "model.pt")
    calls = json.loads((out / "environment.json").read_text())["calls"]
    assert [(c["steps_before"], c["steps_after"], c["evaluated"]) for c in calls] == [(0, 40, True), (40, 60, False),
                                                                                     (60, 60, True)]
    assert ["seconds_evaluating" in c for c in calls] == [True, False, True] and all(c["seconds"] > 0 for c in calls)


def test_a_call_cut_short_is_counted_by_the_next(mirror: Path, params: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's time limit ends a call after 20 steps: the next call starts from those 20."""
    import rlcsc.record

    real = rlcsc.record.train
    monkeypatch.setattr(rlcsc.record, "train", lambda *args, **kwargs: real(*args, **kwargs, stop_after=20))
    argv = ["record", "--params", str(params), "--budget", "quick", "--raw", str(mirror),
            "--out", str(tmp_path / "run"), "--work", str(tmp_path / "work"), "--steps", "30", "--no-evaluate",
            "--jobs", "2"]
    assert main(argv) == 130 and not (tmp_path / "run" / "train.json").exists()
    monkeypatch.setattr(rlcsc.record, "train", real)
    assert main(argv) == 0
    calls = json.loads((tmp_path / "run" / "environment.json").read_text())["calls"]
    assert [(c["steps_before"], c["steps_after"], c.get("interrupted")) for c in calls] == [(0, 20, True),
                                                                                           (20, 30, None)]
    assert all(c["seconds"] > 0 for c in calls)  # the call cut short too
    (tmp_path / "run" / "checkpoint.pt").unlink()  # a copy without its checkpoint, evaluated elsewhere
    assert main([a for a in argv if a != "--no-evaluate"]) == 0
    last = json.loads((tmp_path / "run" / "environment.json").read_text())["calls"][-1]
    assert (last["steps_before"], last["steps_after"], last["evaluated"]) == (30, 30, True)


def test_a_call_cut_short_as_it_writes_its_model_leaves_no_evaluation_of_the_old_one(
        recorded: Path, mirror: Path, params: Path, tmp_path: Path, ctrl_c_at_checkpoint) -> None:
    """Ctrl-C as a call that extends a run writes the run's last checkpoint: the new model is written whole, the call
    ends there (exit 130, not evaluated) and the evaluation of the model it replaced goes with it."""
    out = tmp_path / "K25-quick"
    shutil.copytree(recorded / "runs" / "K25-quick", out)
    assert all((out / name).exists() for name in RESULTS)
    target = json.loads((out / "train.json").read_text())["steps_done"] + 10
    ctrl_c_at_checkpoint(lambda state: sum(call["steps"] for call in state["calls"]) == target)  # the last
    assert main(["record", "--params", str(params), "--budget", "quick", "--raw", str(mirror), "--out", str(out),
                 "--work", str(recorded / "work"), "--steps", str(target), "--jobs", "2"]) == 130
    assert json.loads((out / "train.json").read_text())["steps_done"] == target
    assert not [name for name in RESULTS if (out / name).exists()]
    last = json.loads((out / "environment.json").read_text())["calls"][-1]
    assert (last["steps_after"], last["evaluated"], last["interrupted"]) == (target, False, True)
    verify_run(out)


def test_an_evaluation_left_beside_a_newer_model_is_removed_by_the_next_call(
        recorded: Path, mirror: Path, params: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A second Ctrl-C (or a kill) after a call wrote a new model, before it removed the old one's evaluation,
    leaves that evaluation sealed beside the new model: the next call removes it, before anything else."""
    out = tmp_path / "K25-quick"
    shutil.copytree(recorded / "runs" / "K25-quick", out)
    old = {name: (out / name).read_bytes() for name in RESULTS}
    target = json.loads((out / "train.json").read_text())["steps_done"] + 10
    argv = ["record", "--params", str(params), "--budget", "quick", "--raw", str(mirror), "--out", str(out),
            "--work", str(recorded / "work"), "--steps", str(target), "--no-evaluate", "--jobs", "2"]
    assert main(argv) == 0
    for name, data in old.items():  # as the cut call left the folder: sealed by its end
        (out / name).write_bytes(data)
    reseal(out)
    capsys.readouterr()
    assert main(argv) == 0
    assert f"{out}: its evaluation was of an earlier model than its model.pt" in capsys.readouterr().err
    assert not [name for name in RESULTS if (out / name).exists()]
    verify_run(out)
    assert main(argv[:-3] + ["--jobs", "2"]) == 0  # evaluated, and kept: it is of this model
    assert all((out / name).exists() for name in RESULTS)
    assert main(argv) == 0 and all((out / name).exists() for name in RESULTS)


def test_a_recorded_run_is_never_trained_afresh_over(recorded: Path, mirror: Path, params: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    """Extending a run needs its training code and params: otherwise one line, and nothing changes."""
    from rlcsc import train as module

    out = tmp_path / "K25-quick"
    shutil.copytree(recorded / "runs" / "K25-quick", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    done = json.loads((out / "train.json").read_text())["steps_done"]  # other tests may have extended it
    argv = ["record", "--params", str(params), "--budget", "quick", "--raw", str(mirror),
            "--out", str(out), "--work", str(recorded / "work"), "--steps", str(done + 20), "--jobs", "2"]
    monkeypatch.setattr(module, "code_hash", lambda name: "other")
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    commit = json.loads((out / "environment.json").read_text())["calls"][-1]["commit"]
    assert err == (f"rlcsc record: error: {out / 'checkpoint.pt'} belongs to a run with other training code "
                   f"(made at commit {commit}): extend it with that code and those params, "
                   "or record into another --out")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # not even environment.json
    monkeypatch.undo()
    other = yaml.safe_load(params.read_text())
    other["budgets"]["quick"]["patch"] = {"seed": 1}
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
    other_argv = [argv[0], "--params", str(tmp_path / "other.yaml"), *argv[3:]]
    assert main(other_argv) == 1
    assert capsys.readouterr().err.startswith(f"rlcsc record: error: {out / 'checkpoint.pt'} belongs to a run with "
                                              "other training pairs (made at commit ")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main([*other_argv[:-4], "--steps", str(done), "--jobs", "2"]) == 1  # finished on other pairs: not kept
    assert "belongs to a run with other training pairs" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main([*argv[:-4], "--steps", str(done), "--jobs", "2"]) == 0  # evaluating it again needs no training


def test_a_run_finished_short_of_its_plan_needs_no_training(tmp_path: Path) -> None:
    """A run that diverged, or spent its max_minutes, is finished: `rlcsc record` evaluates it without preparing
    data to train nothing; other params, or pairs made by other params, still need (and refuse) training."""
    from rlcsc.record import _needs_training

    p, pairs = TrainParams(epochs=2), {"augment": {}, "patch": {"seed": 0}}
    (tmp_path / "model.pt").write_bytes(b"")
    done = {"status": "completed", "train": asdict(p), "steps_per_epoch": 10, "steps_done": 5, "seconds_training": 90.0}

    def needs(ckpt: dict | None = None, q: TrainParams = p, **changes) -> bool:
        (tmp_path / "train.json").write_text(json.dumps({**done, **changes}))
        return _needs_training(tmp_path, q, pairs, ckpt)

    assert needs() and not needs(steps_done=20)
    assert not needs(status="diverged at epoch 1, step 5; the weights of step 0 kept")
    assert not needs(q=replace(p, max_minutes=1.5)) and needs(q=replace(p, max_minutes=2))
    assert needs(q=replace(p, lr=0.2), steps_done=20)
    assert needs({"pairs": {**pairs, "patch": {"seed": 1}}}, steps_done=20) and not needs({}, steps_done=20)
    with pytest.raises(RlcscError, match=rf"^{tmp_path / 'train.json'} holds params this code refuses \(TrainParams: "
                                         "precision = 'fp16' is not allowed; .*\): extend it with the code that made"):
        needs(train={**asdict(p), "precision": "fp16"})  # a value older code allowed


def test_bad_folders_and_files_of_a_record_are_one_line(recorded: Path, mirror: Path, params: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """No raw images, no training images, or a damaged file in the run's folder: one line, and nothing is written."""
    argv = ["record", "--params", str(params), "--budget", "quick", "--work", str(recorded / "work"),
            "--steps", "40", "--jobs", "2"]
    assert main([*argv, "--raw", str(tmp_path / "none"), "--out", str(tmp_path / "new")]) == 1
    assert "no raw images at" in capsys.readouterr().err and not (tmp_path / "new").exists()
    assert main([*argv[:7], "--epochs", "5", "--raw", str(mirror), "--out", str(tmp_path / "new")]) == 1  # of 4
    assert capsys.readouterr().err.strip() == ("rlcsc record: error: --epochs 5 is beyond the 4 epochs of budget "
                                               "quick's schedule (train.epochs); a longer run is another schedule, "
                                               "planned in the params")
    assert not (tmp_path / "new").exists()
    shutil.copytree(mirror / "Set5", tmp_path / "tests" / "Set5")  # the test images alone, no pairs made yet
    fresh = [*argv[:5], "--work", str(tmp_path / "work"), *argv[7:], "--raw", str(tmp_path / "tests")]
    assert main([*fresh, "--out", str(tmp_path / "new")]) == 1
    first = sorted((mirror / "T91").iterdir())[0].name
    assert capsys.readouterr().err.strip() == ("rlcsc record: error: missing image "
                                               f"{tmp_path}/tests/T91/{first}: run `rlcsc download --out "
                                               f"{tmp_path}/tests` first")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tests"]
    out = tmp_path / "K25-quick"
    shutil.copytree(recorded / "runs" / "K25-quick", out)
    for name, damaged, said in (("environment.json", b"{", f"{out / 'environment.json'} is not readable JSON"),
                                ("environment.json", b"[]", f"{out / 'environment.json'} holds list, not the mapping"),
                                ("environment.json", b'{"calls": [1]}',
                                 f"{out / 'environment.json'} holds no list of calls"),
                                ("checkpoint.pt", b"not a checkpoint",
                                 f"corrupt {out / 'checkpoint.pt'}: its bytes differ")):
        (out / name).write_bytes(damaged)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        assert main([*argv, "--raw", str(mirror), "--out", str(out)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"rlcsc record: error: {said}") and "\n" not in err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        shutil.copy(recorded / "runs" / "K25-quick" / name, out / name)


def test_device_cuda_without_a_gpu_ends_before_any_data_or_folder(mirror: Path, tmp_path: Path,
                                                                 one_line_error: Callable[[list[str]], str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    blocks = yaml.safe_load((REPO / "params.yaml").read_text())
    blocks["train"]["device"] = "cuda"
    (tmp_path / "cuda.yaml").write_text(yaml.safe_dump(blocks, sort_keys=False))
    said = "device cuda was asked for but no CUDA GPU is available (use auto or cpu)"
    common = ["--budget", "quick", "--raw", str(mirror), "--work", str(tmp_path / "work"), "--jobs", "2"]
    argv = ["record", "--params", str(tmp_path / "cuda.yaml"), *common, "--out", str(tmp_path / "run")]
    assert one_line_error(argv).endswith(said)
    argv = ["compare", "--params", str(REPO / "params.yaml"), *common, "--steps", "2", "--variant", "base:",
            "--variant", "gpu:device=cuda", "--out", str(tmp_path / "ladder.json")]
    assert one_line_error(argv).endswith(f"variant gpu: {said}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cuda.yaml"]


def test_a_model_sealed_by_its_run_folder_is_recorded_at_the_first_call(mirror: Path, tmp_path: Path) -> None:
    """runs/VDSR-official/model.pt carries no checksum of its own: its copy in the new folder is sealed there
    before it is loaded, and scores what the recorded evaluation holds."""
    blocks = yaml.safe_load((REPO / "params.yaml").read_text())
    blocks["budgets"]["quick"]["evaluate"] = {"datasets": ["Set5"], "scales": [3], "ifc": False}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(blocks, sort_keys=False))
    out = tmp_path / "vdsr"
    assert main(["record", "--params", str(tmp_path / "params.yaml"), "--budget", "quick", "--model",
                 str(REPO / "runs" / "VDSR-official" / "model.pt"), "--raw", str(mirror), "--out", str(out),
                 "--jobs", "2"]) == 0
    verify_run(out)
    recorded = json.loads((REPO / "runs" / "VDSR-official" / "metrics.json").read_text())["Set5"]["x3"]["psnr"]
    assert json.loads((out / "metrics.json").read_text())["Set5"]["x3"]["psnr"] == pytest.approx(recorded, abs=1e-4)


def test_an_edited_file_of_a_run_is_never_sealed_as_the_program_s(recorded: Path, mirror: Path, params: Path,
                                                                   tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """`rlcsc record` seals the folder at the end of every call: a file edited by hand since the last seal is
    refused first, else the report's check of the seal would pass it. A call killed before it sealed leaves
    files the seal does not hold; the next call seals them."""
    out = tmp_path / "K25-quick"
    shutil.copytree(recorded / "runs" / "K25-quick", out)
    done = json.loads((out / "train.json").read_text())["steps_done"]
    argv = ["record", "--params", str(params), "--budget", "quick", "--raw", str(mirror), "--out", str(out),
            "--work", str(recorded / "work"), "--steps", str(done), "--no-evaluate", "--jobs", "2"]
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["Set5"]["x3"]["psnr"] = 40.0
    (out / "metrics.json").write_text(json.dumps(metrics))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(argv) == 1
    assert capsys.readouterr().err.startswith(f"rlcsc record: error: corrupt {out / 'metrics.json'}: its bytes differ")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    env = json.loads((out / "environment.json").read_text())
    env["calls"][-1].pop("steps_after")  # as a call killed (SIGKILL, a lost machine) leaves it
    env["calls"][-1]["evaluated"] = False
    (out / "environment.json").write_text(json.dumps(env))
    seal(out, ["environment.json"])  # cut by Ctrl-C or SIGTERM, it sealed what it wrote: the edit is still found
    assert main(argv) == 1
    assert capsys.readouterr().err.startswith(f"rlcsc record: error: corrupt {out / 'metrics.json'}: its bytes differ")
    (out / "environment.json").write_text(json.dumps(env) + "\n")  # killed (SIGKILL) before it could seal
    assert main(argv) == 0
    verify_run(out)
    checkpoint = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").unlink()  # a copy may leave out the checkpoint: the run is sealed without it
    assert main(argv) == 0 and "checkpoint.pt" not in (out / "SHA256SUMS").read_text()
    (out / "checkpoint.pt").write_bytes(checkpoint)  # and have it back to extend the run
    assert main([*argv[:-5], "--steps", str(done + 10), "--no-evaluate", "--jobs", "2"]) == 0


def test_a_record_never_writes_over_another_kind_of_record(recorded: Path, mirror: Path, params: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    """A run without its checkpoint is not trained afresh over; an evaluation is not recorded into a training run,
    bicubic's not over a model's, a training run not over a model's evaluation; and `--steps` does not move where a
    decaying schedule ends. One line each, and nothing changes."""
    run = tmp_path / "run"
    shutil.copytree(recorded / "runs" / "K25-quick", run)
    (run / "checkpoint.pt").unlink()
    done = json.loads((run / "train.json").read_text())["steps_done"]
    model, bicubic = tmp_path / "model", tmp_path / "bicubic"
    for which, out in ((["--model", str(run / "model.pt")], model), (["--method", "bicubic"], bicubic)):
        assert main(["record", "--params", str(params), "--budget", "quick", *which, "--raw", str(mirror),
                     "--out", str(out), "--jobs", "2"]) == 0
        (call,) = json.loads((out / "environment.json").read_text())["calls"]
        assert call["evaluated"] is True and call["seconds"] > 0
    common = ["--params", str(params), "--budget", "quick", "--raw", str(mirror), "--work", str(recorded / "work"),
              "--jobs", "2"]
    cases = [(["--steps", str(done + 10), "--out", str(run)], f"{run} holds a run but not its checkpoint.pt"),
             (["--model", str(run / "model.pt"), "--out", str(run)], f"{run} holds a training run"),
             (["--method", "bicubic", "--out", str(model)],
              f"{model} holds the evaluation of a model made elsewhere, not of bicubic"),
             (["--model", str(run / "model.pt"), "--out", str(bicubic)],
              f"{bicubic} holds the evaluation of bicubic, not of a model made elsewhere"),
             (["--steps", "10", "--out", str(model)],
              f"{model} holds the recorded evaluation of a model made elsewhere"),
             (["--steps", "10", "--out", str(bicubic)], f"{bicubic} holds the recorded evaluation of bicubic"),
             (["--budget", "fast", "--steps", "10", "--out", str(tmp_path / "new")],
              "--steps would move where the cosine")]
    capsys.readouterr()
    for args, said in cases:
        before = {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()}
        assert main(["record", *common, *args]) == 1, args
        err = capsys.readouterr().err
        assert err.startswith(f"rlcsc record: error: {said}") and err.count("\n") == 1, err
        assert {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()} == before


def test_an_evaluation_scored_again_keeps_the_calls_before(mirror: Path, params: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A recorded evaluation scored again appends its call to `environment.json`: cut short, it leaves the last
    scores as they were, beside the call that made them, which the book names as their machine and commit."""
    import rlcsc.record

    out = tmp_path / "runs" / "bicubic"
    argv = ["record", "--params", str(params), "--budget", "quick", "--method", "bicubic", "--raw", str(mirror),
            "--out", str(out), "--jobs", "2"]
    assert main(argv) == 0
    metrics = (out / "metrics.json").read_bytes()
    (first,) = json.loads((out / "environment.json").read_text())["calls"]

    def cut(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(rlcsc.record, "evaluate", cut)
    assert main(argv) == 130  # Ctrl-C
    monkeypatch.undo()
    calls = json.loads((out / "environment.json").read_text())["calls"]
    assert calls[0] == first and calls[1]["evaluated"] is False and len(calls) == 2
    assert (out / "metrics.json").read_bytes() == metrics
    verify_run(out)
    page = report.page(str(params), str(tmp_path / "none"), str(tmp_path / "none"), str(tmp_path / "runs"), "K25")
    assert page.bicubic().evaluation_call() == first
    assert main(argv) == 0
    assert [c["evaluated"] for c in json.loads((out / "environment.json").read_text())["calls"]] == [True, False, True]


def test_a_quick_run_stands_apart_from_the_paper_scale_ones(recorded: Path, tmp_path: Path) -> None:
    """The book's tables and figures set paper-scale runs (paper or fast budget) beside the paper and keep the
    quick budget's in a section of their own."""
    runs = tmp_path / "runs"
    for name, budget in (("K25-quick", "quick"), ("K25-fast", "fast"), ("K25-paper", "paper")):
        shutil.copytree(recorded / "runs" / "K25-quick", runs / name)
        summary = json.loads((runs / name / "train.json").read_text())
        (runs / name / "train.json").write_text(json.dumps({**summary, "budget": budget}))
    assert {r.name: r.paper_scale for r in recorded_runs(runs)} == {"K25-quick": False, "K25-fast": True,
                                                                    "K25-paper": True}


def test_the_book_labels_a_recorded_run_by_what_it_is(recorded: Path) -> None:
    (run,) = recorded_runs(recorded / "runs")
    assert run.recorded and run.k == 25 and run.residual and run.name == "K25-quick"
    row = run.row()
    assert row["made by"] == "`rlcsc record`" and row["network"] == "K = 25, n = 8, m = 16" and row["seed"] == "0"
    assert row["budget"] == ("quick (not the paper's recipe: pairs 2400, batch 16, zero_last true, lr 0.01, "
                             "lr_step 3)")
    assert row["trained"] == f"{run.train['epochs_done']:g} of 4 epochs"
    assert row["machine"] == f"cpu: {cpu_description()}, {os.cpu_count()} cores"  # the machine its last call ran on
    assert row["commit"] == commit(run.environment["calls"][-1]) != "unknown"
    assert run.short() == "K25-quick"  # a column's label: the name alone
    done = replace(run, train={**run.train, "epochs_done": 4})
    assert done.row()["trained"] == "4 of 4 epochs"  # never "completed" for a run short of its plan
    diverged = replace(run, train={**run.train, "status": "diverged at step 7"})
    assert diverged.state().endswith(", diverged at step 7")


def test_a_figure_reads_an_image_score_from_the_run_s_evaluation(recorded: Path) -> None:
    (run,) = recorded_runs(recorded / "runs")
    rows = (recorded / "runs" / "K25-quick" / "per_image.csv").read_text().splitlines()
    dataset, image, scale, psnr = rows[1].split(",")[:4]
    assert run.image_psnr(dataset, image, int(scale)) == float(psnr)
    assert run.image_psnr("Urban100", image, int(scale)) is None  # the quick budget does not score Urban100


def test_a_run_is_timed_to_the_paper_s_number_for_its_network(recorded: Path) -> None:
    (quick,) = recorded_runs(recorded / "runs")
    assert paper_set5_x3(quick) is None  # n = 8, m = 16: a network the paper does not report
    curve = [{"step": s, "seconds": 60.0 * s, "psnr": psnr} for s, psnr in ((1, 33.0), (2, 34.2), (3, 34.1))]

    def network(**model) -> Run:
        return replace(quick, train={**quick.train, "curve": curve,
                                     "model": {**quick.model, "features": 128, "codes": 256, **model}})

    assert paper_set5_x3(network()) == 34.11 and paper_set5_x3(network(recursions=48)) == 34.16  # Figure 7
    assert [paper_set5_x3(network(**m)) for m in ({"recursions": 30}, {"residual": False}, {"bias": True},
                                                  {"codes": 128})] == [None] * 4
    assert network().minutes_to(34.11) == 2 and network().minutes_to(34.3) is None


def test_a_curve_is_read_at_a_time_between_its_snapshots() -> None:
    """A recipe's PSNR after a given training time: a snapshot's own, else linear between its neighbours."""
    curve = [{"step": s, "seconds": 30.0 * s, "psnr": psnr} for s, psnr in ((1, 31.0), (2, 32.0), (4, 33.0))]
    assert [psnr_at(curve, t) for t in (30.0, 45.0, 60.0, 90.0, 120.0)] == [31.0, 31.5, 32.0, 32.5, 33.0]
    assert psnr_at(curve, 29.9) is None and psnr_at(curve, 120.1) is None and psnr_at([], 0.0) is None


def test_compare_trains_variants_from_one_seed(recorded: Path, mirror: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "comparison.json"
    argv = ["compare", "--params", str(REPO / "params.yaml"), "--budget", "quick", "--raw", str(mirror),
            "--work", str(recorded / "work"), "--steps", "20", "--variant", "base:", "--variant", "again:",
            "--variant", "bias:bias=true,lr=2e-3",
            "--variant", "cosine:optimizer=adamw,lr=1e-3,schedule=cosine,warmup=2,clip=null",
            "--variant", "half:max_steps=10,eval_scale=2", "--out", str(out), "--jobs", "2"]
    capsys.readouterr()
    assert main(argv) == 0
    said = {line.split()[0]: line for line in capsys.readouterr().err.splitlines()[-5:]}
    assert " Set5 x3 " in said["base"] and " Set5 x2 " in said["half"]  # each variant's monitor, as it scored
    result = json.loads(out.read_text())
    base, again, bias, cosine, half = result["variants"]
    assert result["max_steps"] == 20 and base["changes"] == {} and bias["changes"] == {"bias": True, "lr": 0.002}
    assert base["curve"][-1]["psnr"] == again["curve"][-1]["psnr"]  # the same seed and data: the same run
    assert bias["model"]["bias"] is True and bias["curve"][-1]["h_bias"] is not None
    assert cosine["steps_done"] == 20 and cosine["curve"][-1]["lr"] < 0.01 * 1e-3  # decayed over the comparison
    assert half["steps_done"] == 10  # a variant's own length
    other = tmp_path / "other.json"
    for bad, said in ((["--variant", "bad:recursions=0"], "variant bad: "), (["--variant", "bad:lr=[1"], "variant "),
                      (["--variant", "a:", "--variant", "a:lr=1"], "variant names must differ"),
                      (["--variant", "bad:clip=null,clip=0.4"], "variant 'bad:clip=null,clip=0.4' gives clip twice"),
                      # found before variant a trains, those that need the patch set once it is made
                      (["--variant", "a:", "--variant", "bad:width=0.00001"], "variant bad: "),
                      (["--variant", "a:", "--variant", "bad:pairs=1000000"], "variant bad: train.pairs 1000000 is "
                                                                              "more than the "),
                      (["--variant", "a:", "--variant", "bad:schedule=cosine,warmup=50"], "variant bad: train.warmup "
                                                                                          "50 is not shorter than")):
        assert main(argv[:-4] + bad + ["--out", str(other)]) == 1 and not other.exists(), bad
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"rlcsc compare: error: {said}"), bad
    kept = out.read_text()  # a comparison is never written over
    assert main(argv) == 1 and out.read_text() == kept
    for target, said in ((tmp_path, f"{tmp_path} is a folder; name the file the result goes to"),
                         (out / "c.json", f"{out} (in {out / 'c.json'}) is a file, not a folder")):
        assert main(argv[:-4] + ["--out", str(target)]) == 1  # before any variant trains, as for a benchmark
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"rlcsc compare: error: {said}"

    runs = tmp_path / "runs"  # the training-time page draws and lists every variant
    (runs / "comparisons").mkdir(parents=True)
    out.rename(runs / "comparisons" / "ladder.json")
    seal(runs / "comparisons")  # its checksum moves with it
    assert main(report_argv("training_time", runs, mirror, tmp_path)) == 0
    outputs = [o for c in json.loads((tmp_path / "training_time.ipynb").read_text())["cells"]
               for o in c.get("outputs", [])]
    text = json.dumps(outputs)
    assert "**ladder**: K25 under the quick budget, 20 steps per variant" in text
    assert "none (the budget as it stood, below)" in text  # the base variant's changes, in words
    assert row_headings(tables(outputs)) == ["base", "again", "bias", "cosine", "half"]  # one row per variant
    changes = "optimizer = adamw, lr = 0.001, schedule = cosine, warmup = 2, clip = none"  # whole; null as none
    assert row_cells(tables(outputs), "cosine")[0] == changes
    first = min(v["curve"][-1]["seconds"] for v in result["variants"])  # every variant read when the first ended
    assert f"<th>PSNR at {first / 60:.2f} min</th>" in tables(outputs)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 1  # the ladder's curves (no run has trained)


def test_a_variant_that_diverges_is_recorded_as_such_and_the_next_one_trains(recorded: Path, mirror: Path,
                                                                           tmp_path: Path) -> None:
    """A recipe that diverges is a result of the comparison, not its end: the later variants still train."""
    out = tmp_path / "comparison.json"
    assert main(["compare", "--params", str(REPO / "params.yaml"), "--budget", "quick", "--raw", str(mirror),
                 "--work", str(recorded / "work"), "--steps", "5", "--variant", "wild:lr=1e12,clip=null",
                 "--variant", "base:", "--out", str(out), "--jobs", "2"]) == 0
    result = json.loads(out.read_text())
    wild, base = result["variants"]
    assert wild["status"].startswith("diverged at epoch 1, step ") and base["status"] == "completed"
    assert result["environment"]["params"]["train"]["on_divergence"] == "record"  # as the variants ran


def test_a_recorded_run_stands_beside_a_comparison_of_its_network_seed_and_data(recorded: Path, mirror: Path,
                                                                              tmp_path: Path) -> None:
    """The recorded run's first 40 steps are what the comparison's unchanged variant trains: the same PSNR."""
    runs = tmp_path / "runs"
    shutil.copytree(recorded / "runs" / "K25-quick", runs / "K25-quick")
    out = runs / "comparisons" / "short.json"
    assert main(["compare", "--params", str(REPO / "params.yaml"), "--budget", "quick", "--raw", str(mirror),
                 "--work", str(recorded / "work"), "--steps", "40", "--variant", "base:", "--variant", "lr:lr=0.02",
                 "--out", str(out), "--jobs", "2"]) == 0
    result = json.loads(out.read_text())
    ((run, curve),) = references(result, recorded_runs(runs))
    assert run.name == "K25-quick" and curve.step.iloc[-1] == 40 and curve.step.max() == 40  # cut at the length
    assert curve.psnr.iloc[-1] == result["variants"][0]["curve"][-1]["psnr"]

    def changed(block: str, key: str, value: object) -> dict:
        params = {**result["environment"]["params"]}
        params[block] = {**params[block], key: value}
        return {**result, "environment": {**result["environment"], "params": params}}

    for block, key, value in (("train", "seed", 1), ("train", "batch", 32), ("train", "codes", 128),
                              ("patch", "size", 41)):
        assert references(changed(block, key, value), recorded_runs(runs)) == []
    fp32 = {**result, "variants": [{**v, "precision": {"train": "bf16"}} for v in result["variants"]]}
    assert references(fp32, recorded_runs(runs)) == []  # trained in another precision
    decaying = replace(run, train={**run.train, "train": {**run.config, "schedule": "cosine"}})
    assert references(result, [decaying]) == []  # its learning rate at a step depends on its own length

    def page_outputs() -> list[dict]:
        assert main(report_argv("training_time", runs, mirror, tmp_path)) == 0
        return [o for c in json.loads((tmp_path / "training_time.ipynb").read_text())["cells"]
                for o in c.get("outputs", [])]

    outputs = page_outputs()
    assert row_headings(tables(outputs))[:3] == ["base", "lr", "K25-quick † (recorded run)"]  # after the two variants
    assert "its minutes do not compare" not in json.dumps(outputs)  # the same machine

    # the variants' curves timed so that base ends when the recorded run took its first snapshot, and lr a second later
    seconds, psnr = run.train["curve"][0]["seconds"], run.train["curve"][0]["psnr"]
    timed = {**result, "variants": [{**v, "curve": [{**v["curve"][-1], "seconds": seconds + i}]}
                                    for i, v in enumerate(result["variants"])]}
    out.write_text(json.dumps(timed))
    seal(out.parent)
    html = tables(page_outputs())
    assert f"<th>PSNR at {seconds / 60:.2f} min</th>" in html  # every curve read when base ended
    assert row_cells(html, "base")[-1] == f"{timed['variants'][0]['curve'][-1]['psnr']:.3f}"
    assert row_cells(html, "lr")[-1] == "-"  # its one snapshot came later
    assert row_cells(html, "K25-quick † (recorded run)")[-1] == f"{psnr:.3f}"
    elsewhere = {**timed, "environment": {**result["environment"], "gpu": "NVIDIA H100 80GB HBM3"}}
    out.write_text(json.dumps(elsewhere))
    seal(out.parent)
    outputs = page_outputs()
    said = "Not on the comparison's machine, so its minutes do not compare: K25-quick trained on cpu"
    assert said in json.dumps(outputs)
    assert row_cells(tables(outputs), "K25-quick † (recorded run)")[-1] == "-"  # nor its PSNR at their minutes


def three_variants(recorded: Path, mirror: Path, out: Path) -> list[str]:
    """`rlcsc compare` of three variants of 5 steps each under the quick budget: base, fast (lr 0.02), never (0.03)."""
    return ["compare", "--params", str(REPO / "params.yaml"), "--budget", "quick", "--raw", str(mirror),
            "--work", str(recorded / "work"), "--steps", "5", "--variant", "base:", "--variant", "fast:lr=0.02",
            "--variant", "never:lr=0.03", "--out", str(out), "--jobs", "2"]


def test_an_interrupted_comparison_keeps_the_variants_it_finished(recorded: Path, mirror: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import rlcsc.record

    def train(p, *args, **kwargs):  # the second variant is interrupted (Ctrl-C, or the machine's time limit)
        return (real(p, *args, **kwargs) if p.lr == 0.01
                else {"status": "interrupted", "epoch": 0, "step": 3, "interrupted": True})

    real = rlcsc.record.train
    monkeypatch.setattr(rlcsc.record, "train", train)
    out = tmp_path / "comparison.json"
    assert main(three_variants(recorded, mirror, out)) == 130
    result = json.loads(out.read_text())
    assert [v["name"] for v in result["variants"]] == ["base"] and result["planned"] == ["base", "fast", "never"]

    runs = tmp_path / "runs"  # the page names the variants the comparison did not reach
    (runs / "comparisons").mkdir(parents=True)
    out.rename(runs / "comparisons" / "cut.json")
    seal(runs / "comparisons")
    assert main(report_argv("training_time", runs, mirror, tmp_path)) == 0
    text = json.dumps([c.get("outputs", [])
                       for c in json.loads((tmp_path / "training_time.ipynb").read_text())["cells"]])
    assert "Not measured (the comparison ended before them): fast, never." in text


def test_a_comparison_signalled_after_a_variant_s_last_host_sync_keeps_that_variant_and_ends(
        recorded: Path, mirror: Path, tmp_path: Path, ctrl_c_at_checkpoint) -> None:
    """Ctrl-C as the second variant writes its last checkpoint: its training is whole, so it is kept, and the
    comparison ends there."""
    ctrl_c_at_checkpoint(lambda state: state["config"]["lr"] == 0.02 and sum(c["steps"] for c in state["calls"]) == 5)
    out = tmp_path / "comparison.json"
    assert main(three_variants(recorded, mirror, out)) == 130
    result = json.loads(out.read_text())
    assert [(v["name"], v["steps_done"], v["status"]) for v in result["variants"]] == [("base", 5, "completed"),
                                                                                      ("fast", 5, "completed")]
    verify_run(out.parent)  # sealed as written


def test_a_comparison_in_minutes_gives_each_variant_that_time_limit(recorded: Path, mirror: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """--minutes is each variant's training time (its max_minutes); the number of steps stays the budget's."""
    import rlcsc.record
    from rlcsc.record import resolved

    trained: list[TrainParams] = []

    def train(p, *args, **kwargs):  # what each variant would train, without the minutes of training
        trained.append(p)
        return {"status": "completed", "steps_done": 0, "epochs_done": 0, "ms_per_step": None,
                "seconds_training": 0.0, "precision": {}, "model": {}, "curve": []}

    monkeypatch.setattr(rlcsc.record, "train", train)
    out = tmp_path / "comparison.json"
    assert main(["compare", "--params", str(REPO / "params.yaml"), "--budget", "quick", "--raw", str(mirror),
                 "--work", str(recorded / "work"), "--minutes", "1.5", "--variant", "base:", "--variant",
                 "fast:lr=0.02", "--out", str(out), "--jobs", "2"]) == 0
    budget = resolved(REPO / "params.yaml", "quick", "K25")["train"]
    assert [(p.lr, p.max_minutes, p.max_steps) for p in trained] == [(budget.lr, 1.5, budget.max_steps),
                                                                     (0.02, 1.5, budget.max_steps)]
    result = json.loads(out.read_text())
    assert result["max_minutes"] == 1.5 and "max_steps" not in result


def test_tables_show_the_main_network_and_where_each_run_ended(recorded: Path, mirror: Path, tmp_path: Path) -> None:
    """Tables 1-3 set the main experiment's network beside the paper's RL-CSC: a recorded run of another
    K stays out of them. Table 3 gives every run's last snapshot a column of its own."""
    runs = tmp_path / "runs"
    shutil.copytree(recorded / "runs" / "K25-quick", runs / "K25-quick")
    shutil.copytree(recorded / "runs" / "K25-quick", runs / "K15-quick")
    train = json.loads((runs / "K15-quick" / "train.json").read_text())
    train["model"]["recursions"] = train["train"]["recursions"] = 15
    (runs / "K15-quick" / "train.json").write_text(json.dumps(train))
    seal(runs / "K15-quick")  # a run recorded so, not one edited since
    for name in ("table1", "table3"):
        assert main(report_argv(name, runs, mirror, tmp_path)) == 0
        outputs = [o for c in json.loads((tmp_path / f"{name}.ipynb").read_text())["cells"]
                   for o in c.get("outputs", [])]
        assert "| K25-quick | `rlcsc record` |" in json.dumps(outputs) and "K15-quick" not in json.dumps(outputs)
    last = json.loads((runs / "K25-quick" / "train.json").read_text())
    quick = tables(outputs)  # Table 3's quick section: the run's last snapshot and how far it trained
    assert "K25-quick" in row_headings(quick) and f"{last['curve'][-1]['psnr']:.2f}" in quick
    assert f"{last['epochs_done']:g} of 4 epochs" in quick


@pytest.mark.parametrize("name", ["table1", "table3", "figure7", "figures4_6", "training_time"])
def test_the_report_shows_a_recorded_run(recorded: Path, mirror: Path, tmp_path: Path, name: str) -> None:
    """A notebook executed where the recorded run is the only run: it is shown, labelled as recorded."""
    assert main(report_argv(name, recorded / "runs", mirror, tmp_path)) == 0
    cells = json.loads((tmp_path / f"{name}.ipynb").read_text())["cells"]
    outputs = [o for c in cells for o in c.get("outputs", [])]
    assert "| K25-quick | `rlcsc record` | K = 25, n = 8, m = 16 |" in json.dumps(outputs)  # its row in the runs table
    if name == "training_time":  # its wall clock beside its training time
        train = json.loads((recorded / "runs" / "K25-quick" / "train.json").read_text())
        html = tables(outputs)
        assert "wall minutes" in html and f"<td>{train['seconds_wall'] / 60:.2f}</td>" in html


@pytest.fixture(scope="module")
def fast_beside_paper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Recorded runs: runs/K25-paper and, made from it, a K25-fast run as a fast-budget call would have recorded
    it (the budget's training parameters in its records; its numbers are the paper-recipe run's), both sealed."""
    runs = tmp_path_factory.mktemp("fast") / "runs"
    for name in ("K25-paper", "K25-fast"):
        shutil.copytree(REPO / "runs" / "K25-paper", runs / name, ignore=shutil.ignore_patterns("checkpoint.pt"))
    fast = runs / "K25-fast"
    train = json.loads((fast / "train.json").read_text())
    layer = yaml.safe_load((REPO / "params.yaml").read_text())["budgets"]["fast"]["train"]
    p = TrainParams(**{**train["train"], **layer, "stop_epoch": 0})
    planned = p.planned_steps(train["steps_per_epoch"])
    train.update(budget="fast", train=asdict(p), recipe_changes=p.recipe_changes(), steps_planned=planned,
                 epochs_planned=round(planned / train["steps_per_epoch"], 4))
    (fast / "train.json").write_text(json.dumps(train, indent=2) + "\n")
    env = json.loads((fast / "environment.json").read_text())
    for call in env["calls"]:
        call["params"].update(budget="fast", train=asdict(p))
    (fast / "environment.json").write_text(json.dumps(env, indent=2) + "\n")
    reseal(fast)
    return runs


@pytest.mark.parametrize("name", ["intro", "table1", "table3", "figure7", "training_time"])
def test_the_report_shows_a_fast_run_beside_the_paper_recipe_run(fast_beside_paper: Path, mirror: Path,
                                                                  tmp_path: Path, name: str) -> None:
    """A fast-budget run is shown with the paper-recipe run, each labelled with its budget, the fast one with what
    its recipe changes."""
    text = page_text(name, fast_beside_paper, mirror, tmp_path)
    assert ("| K25-fast | `rlcsc record` | K = 25, n = 128, m = 256 | fast (not the paper's recipe: zero_last true, "
            "optimizer adamw, lr 0.001, schedule cosine, warmup 500, weight_decay 0.0, clip none) |") in text
    assert "| K25-paper | `rlcsc record` | K = 25, n = 128, m = 256 | paper (the paper's recipe) |" in text
    assert "fast budget" in text and "paper budget" in text
    fast = json.loads((fast_beside_paper / "K25-fast" / "train.json").read_text())  # how far each trained:
    assert f"| {fast['steps_done']:,} of {fast['steps_planned']:,} steps, 1 of 1.53 epochs |" in text  # 23,000 steps
    assert "| 1 of 35 epochs |" in text


@pytest.mark.parametrize("name", ["table1", "table2", "figure1"])
def test_a_page_of_scores_names_the_fast_run_it_leaves_out_until_it_is_evaluated(
        fast_beside_paper: Path, mirror: Path, tmp_path: Path, name: str) -> None:
    """A fast run trained in one call and not yet evaluated (its evaluation is a later call) has no scores to show
    beside the paper's Tables 1-2: their pages say so, rather than leave it out unsaid. Figure 1 plots its Set5 x3
    PSNR by its training monitor, as the scorecard counts it, and says so."""
    runs = tmp_path / "runs"
    shutil.copytree(fast_beside_paper, runs)
    assert "Not evaluated yet" not in page_text(name, runs, mirror, tmp_path)
    for result in RESULTS:
        (runs / "K25-fast" / result).unlink()
    reseal(runs / "K25-fast")
    said = page_text(name, runs, mirror, tmp_path)
    if name == "figure1":
        psnr = json.loads((runs / "K25-fast" / "train.json").read_text())["curve"][-1]["psnr"]
        assert f"stands at {psnr:.2f} dB by its training monitor (not evaluated yet)" in said
        assert "Not evaluated yet" not in said
    else:
        assert "Not evaluated yet, so not on this page: **K25-fast** (fast budget, 15,076 of 23,000 steps" in said
    assert "K25-paper" in said


def test_a_run_of_another_network_is_named_on_the_first_page_and_shown_nowhere(mirror: Path, tmp_path: Path) -> None:
    """`train.arch` also trains DRRN, whose runs no page of the book is about: the first page names such a run, and
    the pages, whose tables and figures read RL-CSC's K, n and m, leave it out."""
    runs = tmp_path / "runs"
    shutil.copytree(REPO / "runs", runs)
    folder = runs / "DRRN-fast"
    shutil.copytree(runs / "K25-paper", folder, ignore=shutil.ignore_patterns("*.pt"))
    train = json.loads((folder / "train.json").read_text())
    train["model"] = {"units": 9, "features": 128, "channels": 1, "arch": "drrn", "parameters": 297_216, "depth": 20}
    train["train"].update(arch="drrn", units=9)
    (folder / "train.json").write_text(json.dumps({**train, "budget": "fast"}))
    reseal(folder)
    said = page_text("intro", runs, mirror, tmp_path)
    assert "Runs of another network than RL-CSC are on no page of this book: DRRN-fast (drrn)." in said
    assert "DRRN-fast" not in page_text("training_time", runs, mirror, tmp_path)


def test_a_run_scored_without_ifc_is_named_on_table2_s_page(mirror: Path, tmp_path: Path) -> None:
    """An evaluation may leave IFC out (`evaluate.ifc: false`): Table 2's page names such a run instead of failing."""
    runs = tmp_path / "runs"
    shutil.copytree(REPO / "runs", runs)
    metrics = json.loads((runs / "K25-paper" / "metrics.json").read_text())
    for cells in metrics.values():
        for cell in cells.values():
            del cell["ifc"]
    (runs / "K25-paper" / "metrics.json").write_text(json.dumps(metrics))
    reseal(runs / "K25-paper")
    said = page_text("table2", runs, mirror, tmp_path)
    assert "Scored without IFC in the cells of this table, so not on this page: K25-paper." in said
    assert "No paper-scale run of the main network has been scored with IFC yet." in said


def test_the_first_page_says_when_no_fast_run_is_left_to_train(fast_beside_paper: Path, mirror: Path,
                                                               tmp_path: Path) -> None:
    """Once every experiment's network has a fast run trained to its plan, the first page says that none is left
    to train under the fast budget, where it said how many GPU-minutes the rest would take."""
    runs = tmp_path / "runs"
    shutil.copytree(fast_beside_paper, runs)
    assert "under the fast budget about " in page_text("intro", runs, mirror, tmp_path)
    for name, entry in yaml.safe_load((REPO / "params.yaml").read_text())["experiments"].items():
        folder = runs / f"{name}-fast"
        if not folder.exists():
            shutil.copytree(runs / "K25-fast", folder)
        train = json.loads((folder / "train.json").read_text())
        network = {k: entry.get(k, train["model"][k]) for k in ("recursions", "codes", "residual")}
        train["model"].update(network)
        train["train"].update(network)
        train.update(steps_done=train["steps_planned"], epochs_done=train["epochs_planned"])
        (folder / "train.json").write_text(json.dumps(train))
        reseal(folder)
    said = page_text("intro", runs, mirror, tmp_path)
    assert "under the fast budget none is left to train (below)" in said and "under the fast budget about" not in said


def test_a_run_that_finished_short_of_the_paper_s_number_says_it_never_reached_it(fast_beside_paper: Path,
                                                                                  mirror: Path, tmp_path: Path) -> None:
    """The training-time page says of a run still training that it has not reached the paper's number yet, and of one
    that finished its plan below it that it did not; Figures 1 and 7, where the one stands and where the other ended."""
    runs = tmp_path / "runs"
    shutil.copytree(fast_beside_paper, runs)
    train = json.loads((runs / "K25-fast" / "train.json").read_text())
    train.update(steps_done=train["steps_planned"], epochs_done=train["epochs_planned"])
    (runs / "K25-fast" / "train.json").write_text(json.dumps(train))
    reseal(runs / "K25-fast")
    assert main(report_argv("training_time", runs, mirror, tmp_path)) == 0
    cells = json.loads((tmp_path / "training_time.ipynb").read_text())["cells"]
    outputs = [o for c in cells for o in c.get("outputs", [])]
    text = "".join("".join(o["data"]["text/markdown"]) for o in outputs if "text/markdown" in o.get("data", {}))
    assert "K25-fast (fast budget, NVIDIA H100 80GB HBM3) did not reach the paper's 34.11 dB" in text
    assert "K25-paper (paper budget, NVIDIA H100 80GB HBM3) has not reached the paper's 34.11 dB" in text
    html = tables(outputs)
    assert row_cells(html, "K25-fast †")[-1] == "never (it finished)"
    assert row_cells(html, "K25-paper †")[-1] == "not yet"
    said = page_text("figure7", runs, mirror, tmp_path)
    assert "**K25-fast** (K = 25, fast budget) trained 23,000 of 23,000 steps, 1.53 of 1.53 epochs and ended at" in said
    assert "**K25-paper** (K = 25, paper budget) has trained 1 of 35 epochs and stands at 33.30 dB" in said
    said = page_text("figure1", runs, mirror, tmp_path)
    assert ("**K25-fast †** (K = 25, fast budget, 23,000 of 23,000 steps, 1.53 of 1.53 epochs, 1,329,408 parameters) "
            "ended at") in said
    assert "**K25-paper †** (K = 25, paper budget, 1 of 35 epochs, 1,329,408 parameters) stands at 33.30 dB" in said


def test_table3_says_whether_a_run_without_the_residual_converged(fast_beside_paper: Path, mirror: Path,
                                                                  tmp_path: Path) -> None:
    """A fast run of the network without the residual connection is set against the paper's claim that it "cannot
    even converge", beside the fast run of the same network with it."""
    runs = tmp_path / "runs"
    shutil.copytree(fast_beside_paper, runs)
    folder = runs / "K25_noresidual-fast"
    shutil.copytree(runs / "K25-fast", folder)
    train = json.loads((folder / "train.json").read_text())
    train["model"]["residual"] = train["train"]["residual"] = False
    (folder / "train.json").write_text(json.dumps(train))
    reseal(folder)
    text = page_text("table3", runs, mirror, tmp_path)
    psnr = json.loads((folder / "metrics.json").read_text())["Set5"]["x3"]["psnr"]
    assert (f"**K25_noresidual-fast** (fast budget, without the residual, 15,076 of 23,000 steps, 1 of 1.53 "
            f"epochs): 33.30 dB at epoch 1 against the paper's 6.54 (+26.76). Its loss stayed finite, and it stands at "
            f"{psnr:.2f} dB, ") in text
    assert ("+0.00 dB from K25-fast (33.30 dB), the same network and budget with the residual. So far it converges, "
            "to an output better than its input; its run has not finished.") in text


def test_table3_says_that_a_run_which_diverged_before_its_first_snapshot_did_not_converge(
        fast_beside_paper: Path, mirror: Path, tmp_path: Path) -> None:
    """A run without the residual that diverged before its first snapshot has no point to draw; its divergence is
    still its result, which the page gives, rather than saying that no such run exists."""
    runs = tmp_path / "runs"
    shutil.copytree(fast_beside_paper, runs)
    folder = runs / "K25_noresidual-fast"
    shutil.copytree(runs / "K25-fast", folder)
    for name in ("metrics.json", "per_image.csv", "evaluation.json"):
        (folder / name).unlink()
    train = json.loads((folder / "train.json").read_text())
    train["model"]["residual"] = train["train"]["residual"] = False
    train.update(status="diverged at epoch 1, step 40; the weights of step 0 kept", curve=[], steps_done=0,
                 epochs_done=0.0)
    (folder / "train.json").write_text(json.dumps(train))
    reseal(folder)
    text = page_text("table3", runs, mirror, tmp_path)
    assert ("**K25_noresidual-fast** (fast budget, without the residual, 0 of 23,000 steps, 0 of 1.53 epochs): no "
            "epoch of the table reached. It did not converge: its loss or gradient became non-finite, as the paper "
            "reports of its own recipe.") in text
    assert "No paper-scale run without the residual connection has been recorded" not in text


def test_figure7_says_that_a_run_which_diverged_ended_there(fast_beside_paper: Path, mirror: Path,
                                                            tmp_path: Path) -> None:
    """A run that diverged trains no further: Figure 7's page says how far it trained, that it diverged, and where it
    ended, not that it stands there."""
    runs = tmp_path / "runs"
    shutil.copytree(fast_beside_paper, runs)
    train = json.loads((runs / "K25-fast" / "train.json").read_text())
    status = "diverged at epoch 2, step 16000; the weights of step 15076 kept"
    (runs / "K25-fast" / "train.json").write_text(json.dumps({**train, "status": status}))
    reseal(runs / "K25-fast")
    text = page_text("figure7", runs, mirror, tmp_path)
    assert (f"**K25-fast** (K = 25, fast budget) trained 15,076 of 23,000 steps, 1 of 1.53 epochs, {status} and ended "
            "at ") in text


def test_the_methods_page_names_the_machine_that_scored_a_model_again_in_fp32(mirror: Path, tmp_path: Path) -> None:
    """An inference benchmark beside a run scores its model again in fp32 on the machine it ran on, which the page
    names (from the benchmark's file), as it names the machine of the run's own evaluation."""
    runs = tmp_path / "runs"
    shutil.copytree(REPO / "runs", runs)
    bench = json.loads((runs / "K25-paper" / "inference_cpu.json").read_text())
    bench["machine"]["gpu"] = "NVIDIA H200"
    (runs / "K25-paper" / "inference_cpu.json").write_text(json.dumps(bench))
    reseal(runs / "K25-paper")
    text = page_text("methods", runs, mirror, tmp_path)
    assert f"`inference_cpu.json` (NVIDIA H200, commit {commit(bench['machine'])}): " in text
    assert "`inference_cpu_avx2.json` (cpu: AMD" in text
    assert "Scored in fp32 there instead of tf32 on NVIDIA H100" in text


def test_figure1_says_a_run_not_evaluated_on_set5_x3_is_scored_by_its_monitor(fast_beside_paper: Path, mirror: Path,
                                                                              tmp_path: Path) -> None:
    """An evaluation may leave Set5 x3 out (its `datasets` or `scales`): Figure 1 then plots the run's training
    monitor's Set5 x3 PSNR and says so."""
    runs = tmp_path / "runs"
    shutil.copytree(fast_beside_paper, runs)
    metrics = json.loads((runs / "K25-fast" / "metrics.json").read_text())
    (runs / "K25-fast" / "metrics.json").write_text(json.dumps({"Set14": metrics["Set14"]}))
    reseal(runs / "K25-fast")
    psnr = json.loads((runs / "K25-fast" / "train.json").read_text())["curve"][-1]["psnr"]
    said = page_text("figure1", runs, mirror, tmp_path)
    assert f"stands at {psnr:.2f} dB by its training monitor (not evaluated on Set5 x3)" in said


def test_table3_sets_only_the_paper_s_network_against_its_points(fast_beside_paper: Path, mirror: Path,
                                                                 tmp_path: Path) -> None:
    """Table 3's points are the paper's K = 25 network's: a main run of another K is not set against them."""
    runs = tmp_path / "runs"
    shutil.copytree(fast_beside_paper, runs)
    train = json.loads((runs / "K25-paper" / "train.json").read_text())
    train["model"]["recursions"] = train["train"]["recursions"] = 10
    (runs / "K25-paper" / "train.json").write_text(json.dumps(train))
    reseal(runs / "K25-paper")
    blocks = yaml.safe_load((REPO / "params.yaml").read_text())
    blocks["report"]["main"] = "K10"
    blocks["experiments"]["K10"] = {"recursions": 10}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(blocks, sort_keys=False))
    text = page_text("table3", runs, mirror, tmp_path, tmp_path / "params.yaml")
    assert ("**K25-paper** (paper budget, with the residual, 1 of 35 epochs): 33.30 dB at epoch 1. The paper's "
            "Table 3 is of its K = 25 network with n = 128 and m = 256 and no biases: it has no points for "
            "K25-paper's.") in text


def test_the_kind_of_record_a_folder_holds_is_read_from_its_files_and_calls(tmp_path: Path) -> None:
    """A training call cut short before it wrote a file still makes its folder a training run's; a call that named
    a model, a model's evaluation; an evaluation without either, bicubic's. The files decide where they are."""
    from rlcsc.record import _held

    assert _held(tmp_path, []) is None
    assert _held(tmp_path, [{"params": {"budget": "quick"}, "steps_before": 0, "evaluated": False}]) == "training"
    assert _held(tmp_path, [{"params": {"model": {"experiment": "K25"}}, "evaluated": False}]) == "model"
    assert _held(tmp_path, [{"params": {"model": None}, "evaluated": False}]) == "bicubic"
    (tmp_path / "evaluation.json").write_text("{}")
    assert _held(tmp_path, []) == "bicubic"
    (tmp_path / "model.pt").write_bytes(b"")
    assert _held(tmp_path, []) == "model"
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert _held(tmp_path, []) == "training"


def test_an_edited_evaluation_record_is_refused_before_a_call_writes_into_it(tmp_path: Path) -> None:
    """The seal of an evaluation's folder is checked as a training run's is: a call that ended (it evaluated)
    excuses no edit; one killed before it could seal leaves files the next call seals. A checkpoint, which only
    extending a run needs, may be missing or unlisted."""
    from rlcsc.errors import RlcscError
    from rlcsc.record import _check_sealed

    calls = [{"params": {"model": None}, "evaluated": True}]
    (tmp_path / "metrics.json").write_text("{}\n")
    (tmp_path / "checkpoint.pt").write_bytes(b"weights")
    (tmp_path / "environment.json").write_text(json.dumps({"calls": calls}))
    seal(tmp_path)
    _check_sealed(tmp_path, calls)
    (tmp_path / "checkpoint.pt").unlink()  # a copy without it
    _check_sealed(tmp_path, calls)
    (tmp_path / "checkpoint.pt").write_bytes(b"other weights")  # one brought back, not the sealed one
    with pytest.raises(RlcscError, match="checkpoint.pt: its bytes differ"):
        _check_sealed(tmp_path, calls)
    (tmp_path / "checkpoint.pt").unlink()
    seal(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"weights")  # there, but not listed
    _check_sealed(tmp_path, calls)
    (tmp_path / "environment.json").write_text(json.dumps({"calls": calls}, indent=1))  # the ended call's, edited
    with pytest.raises(RlcscError, match="environment.json: its bytes differ"):
        _check_sealed(tmp_path, calls)
    (tmp_path / "environment.json").write_text(json.dumps({"calls": calls}))
    (tmp_path / "metrics.json").write_text('{"Set5": {"x3": {"psnr": 40.0}}}\n')
    with pytest.raises(RlcscError, match="metrics.json: its bytes differ"):
        _check_sealed(tmp_path, calls)
    killed = [*calls, {"params": {"model": None}, "evaluated": False}]  # its entry written, then SIGKILL
    (tmp_path / "environment.json").write_text(json.dumps({"calls": killed}))
    _check_sealed(tmp_path, killed)
    seal(tmp_path, ["environment.json"])  # cut by Ctrl-C, it sealed what it wrote: the edit is still found
    with pytest.raises(RlcscError, match="metrics.json: its bytes differ"):
        _check_sealed(tmp_path, killed)


def test_a_run_whose_train_json_holds_a_key_this_code_lacks_is_read(tmp_path: Path) -> None:
    """A run made by older code may hold a training key since removed: it is still found finished, not an error."""
    from rlcsc.record import _needs_training

    p = TrainParams(epochs=2, compile=False, device="cpu")
    (tmp_path / "model.pt").write_bytes(b"")
    done = {"train": {**asdict(p), "a_removed_key": 1}, "status": "completed", "seconds_training": 1.0,
            "steps_per_epoch": 8, "steps_done": 16}
    (tmp_path / "train.json").write_text(json.dumps(done))
    assert _needs_training(tmp_path, p, {}, None) is False
    (tmp_path / "train.json").write_text(json.dumps({**done, "steps_done": 15}))
    assert _needs_training(tmp_path, p, {}, None) is True
