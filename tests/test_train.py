"""Training: the recipe, snapshots, resumption, divergence, DDP agreement, devices."""

from __future__ import annotations

import copy
import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from rlcsc.checksums import seal
from rlcsc.data.augment import AugmentParams, augment
from rlcsc.data.patches import PatchParams, PatchSet, make_patches
from rlcsc.device import cpu_description
from rlcsc.errors import RlcscError
from rlcsc.recipe import learning_rate, load_optimizer
from rlcsc.train import Distributed, Monitor, TrainParams, epoch_order, prepare, train

TINY = TrainParams(recursions=2, features=4, codes=8, pairs=64, batch=8, epochs=2, lr=0.01,
                   checkpoint_every=4, log_every=2, compile=False, device="cpu")


@pytest.fixture(scope="module")
def patches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small patch set cut from two synthetic images."""
    root = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:140, 0:150]
    for i in range(2):
        img = 128 + 90 * np.sin(xx / (5 + i)) * np.cos(yy / 7) + rng.normal(0, 10, (140, 150))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"{i}.png")
    augment([root / "0.png", root / "1.png"], root / "aug", AugmentParams(flips=("none",), factors=(1.0,)), jobs=1)
    make_patches(root / "aug", root / "patches", PatchParams(chunk=8), jobs=1)
    return root / "patches"


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_learning_rate_schedules() -> None:
    paper = TrainParams()
    assert [learning_rate(paper, e * 100, 100) for e in (0, 9, 10, 19, 20, 34)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.0001])
    cosine = TrainParams(schedule="cosine", epochs=2, warmup=10, lr=1.0)
    assert learning_rate(cosine, 0, 100) == pytest.approx(0.1)  # warm-up: (step + 1) / warmup
    assert learning_rate(cosine, 9, 100) == pytest.approx(1.0)
    assert learning_rate(cosine, 105, 100) == pytest.approx(0.5)  # half-way through the decay
    assert learning_rate(cosine, 199, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 189 / 190)))
    linear = TrainParams(schedule="linear", epochs=1, lr=2.0)
    assert learning_rate(linear, 25, 100) == pytest.approx(1.5)
    assert [replace(cosine, max_steps=m).planned_steps(100) for m in (0, 60, 500)] == [200, 60, 200]
    assert replace(paper, max_steps=60).planned_steps(100) == 3500  # the step schedule: a stop point only
    short = replace(cosine, max_steps=60, stop_epoch=1)  # max_steps is the planned end; stop_epoch only cuts
    assert learning_rate(short, 35, 100) == pytest.approx(0.5) and learning_rate(short, 59, 100) < 0.01
    assert learning_rate(replace(paper, max_steps=60), 59, 100) == pytest.approx(0.1)  # the step schedule ignores it


def test_the_planned_length_decides_a_decaying_run_only() -> None:
    """A cosine run cut to fewer steps computes other weights; the paper's schedule does not change."""
    paper, cosine = TrainParams(), TrainParams(schedule="cosine")
    assert replace(paper, max_steps=500, epochs=3, stop_epoch=2).identity() == paper.identity()
    assert replace(cosine, stop_epoch=2, max_minutes=5).identity() == cosine.identity()
    assert replace(cosine, max_steps=500).identity() != cosine.identity()
    assert replace(cosine, epochs=3).identity() != cosine.identity()


def test_the_recipe_changes_name_what_differs_from_the_paper() -> None:
    from rlcsc.record import resolved

    assert TrainParams().recipe_changes() == {}
    assert resolved(Path(__file__).resolve().parents[1] / "params.yaml", "paper", "K48")["train"].recipe_changes() == {}
    p = replace(TrainParams(), lr=0.01, clip=None, seed=3, width=0.5, recursions=7, eval_every=9)
    assert p.recipe_changes() == {"lr": 0.01, "clip": None}  # the network, seed and monitor are not the recipe


def test_snapshots_record_the_curve_and_gradient_norms(patches: Path, mirror: Path, tmp_path: Path) -> None:
    p = replace(TINY, eval_every=3, bias=True, clip=0.05)
    summary = train(p, patches, mirror, tmp_path)
    assert summary["status"] == "completed" and summary["steps_per_epoch"] == 8
    assert [c["step"] for c in summary["curve"]] == [3, 6, 8, 9, 12, 15, 16]  # every 3 steps and each epoch's end
    assert [c["steps"] for c in summary["curve"]] == [3, 3, 2, 1, 3, 3, 1]
    for c in summary["curve"]:  # the share clipped: the interval's steps whose norm was over the clip
        assert c["grad_norm_median"] <= c["grad_norm_max"]
        assert c["clipped_fraction"] >= 0.5 if c["grad_norm_median"] > p.clip else c["grad_norm_median"] <= p.clip
        assert c["clipped_fraction"] == 0 if c["grad_norm_max"] <= p.clip else c["clipped_fraction"] > 0
        assert c["psnr"] > 10 and 0 <= c["zero_fraction"] <= 1 and c["h_bias"] is not None
    assert any(c["clipped_fraction"] > 0 for c in summary["curve"])  # a clip of 0.05 clips the untrained network
    assert summary["curve"][-1]["epoch"] == 2.0 and summary["model"]["bias"] is True
    saved = json.loads((tmp_path / "train.json").read_text())
    assert saved["curve"] == summary["curve"] and saved["train"]["eval_every"] == 3
    metrics = json.loads((tmp_path / "train_metrics.json").read_text())
    assert metrics == {"status": "completed", "epochs_done": 2.0, "steps_done": 16,
                       "ms_per_step": summary["ms_per_step"], "set5_x3_psnr": summary["curve"][-1]["psnr"],
                       "set5_x3_ssim": summary["curve"][-1]["ssim"]}
    plain = train(replace(TINY, max_steps=3), patches, mirror, tmp_path / "plain", "winograd")
    assert plain["curve"][-1]["h_bias"] is None and plain["steps_done"] == 3  # no biases: nothing to log
    assert plain["precision"] == {"train": "fp32", "monitor": "fp32"}  # layers too narrow for winograd


def test_resume_after_interruption_equals_uninterrupted_run(patches: Path, mirror: Path, tmp_path: Path) -> None:
    straight = train(TINY, patches, mirror, tmp_path / "a")
    assert straight["status"] == "completed" and straight["epochs_done"] == 2
    first = train(TINY, patches, mirror, tmp_path / "b", stop_after=5)  # killed mid-epoch
    assert first == {"status": "interrupted", "epoch": 0, "step": 5, "interrupted": True}
    assert not (tmp_path / "b" / "model.pt").exists()
    # logging, checkpointing and compile settings may change between calls of one run (not its identity)
    resumed = train(replace(TINY, log_every=1, checkpoint_every=3, compile=True), patches, mirror, tmp_path / "b")
    assert resumed["status"] == "completed"
    assert same_weights(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")
    assert resumed["curve"] == [{**c, "seconds": r["seconds"]}
                               for c, r in zip(straight["curve"], resumed["curve"], strict=True)]


@pytest.mark.parametrize("refusal", [errno.ENOSPC, errno.EROFS], ids=["disk full", "read-only folder"])
def test_a_full_disk_or_a_read_only_folder_is_one_line_and_keeps_the_last_checkpoint(
        refusal: int, patches: Path, mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The second checkpoint (epoch 1, step 4) cannot be written: the disk fills while it is written, or no
    file can be made."""
    from rlcsc.cli import main

    params, out = tmp_path / "params.yaml", tmp_path / "run"
    params.write_text(yaml.safe_dump({"train": vars(TINY), "experiments": {"tiny": {}}}))
    saves, save, mkstemp = [], torch.save, tempfile.mkstemp

    def full(obj: dict, f, *args, **kwargs) -> None:
        saves.append(obj["step"])
        if len(saves) == 2:
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        save(obj, f, *args, **kwargs)

    def read_only(suffix: str, prefix: str, dir: str) -> tuple[int, str]:
        saves.append(prefix)
        if len(saves) == 2:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(Path(dir) / prefix))
        return mkstemp(suffix, prefix, dir)

    if refusal == errno.ENOSPC:
        monkeypatch.setattr(torch, "save", full)
    else:
        monkeypatch.setattr(tempfile, "mkstemp", read_only)
    argv = ["train", "--params", str(params), "--experiment", "tiny", "--patches", str(patches), "--raw", str(mirror),
            "--out", str(out)]
    assert main(argv) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"rlcsc train: error: cannot write {out / 'checkpoint.pt'}: {os.strerror(refusal)}; training stopped at "
        "epoch 1, step 4: rerun it to resume from the last checkpoint written")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no lock left
    assert [p.name for p in out.iterdir()] == ["checkpoint.pt"]  # no temporary
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 0  # the first, whole


def test_a_checkpoint_of_other_training_code_is_not_resumed(patches: Path, mirror: Path, tmp_path: Path,
                                                             monkeypatch, capsys) -> None:
    from rlcsc import train as module

    train(TINY, patches, mirror, tmp_path, stop_after=3)
    monkeypatch.setattr(module, "code_hash", lambda name: "other")
    capsys.readouterr()
    train(TINY, patches, mirror, tmp_path)
    err = capsys.readouterr().err
    assert "other training code: starting afresh" in err and "resuming" not in err


def test_a_checkpoint_of_params_this_code_refuses_belongs_to_another_run() -> None:
    """Older code allowed a value this code refuses: the checkpoint is another run's, said with the value."""
    from rlcsc.train import foreign

    ckpt = {"config": {**asdict(TINY), "precision": "fp16"}, "code": "older"}
    (differ,) = foreign(ckpt, TINY, {})
    assert differ.startswith("params this code refuses (TrainParams: precision = 'fp16' is not allowed")


def test_a_run_extends_by_more_epochs(patches: Path, mirror: Path, tmp_path: Path) -> None:
    train(replace(TINY, epochs=3), patches, mirror, tmp_path / "whole")
    one = train(replace(TINY, epochs=3, stop_epoch=1), patches, mirror, tmp_path / "parts",  # as `record --epochs 1`
                plan=replace(TINY, epochs=3))
    assert one["epochs_done"] == 1 and (tmp_path / "parts" / "model.pt").exists()
    extent = ("steps_done", "epochs_done", "epochs_planned")  # the model file says how far it trained
    model = torch.load(tmp_path / "parts" / "model.pt", weights_only=True)
    assert [model[k] for k in extent] == [one["steps_per_epoch"], 1.0, 3.0]
    rest = train(replace(TINY, epochs=3), patches, mirror, tmp_path / "parts")
    assert rest["epochs_done"] == 3 and len(rest["curve"]) == 3
    assert torch.load(tmp_path / "parts" / "model.pt", weights_only=True)["epochs_done"] == 3.0
    assert same_weights(tmp_path / "whole" / "model.pt", tmp_path / "parts" / "model.pt")
    # each call that trained is on record, and its steps add up to the run's
    per_epoch = rest["steps_per_epoch"]
    assert [c["steps"] for c in rest["calls"]] == [per_epoch, 2 * per_epoch]
    assert rest["seconds_wall"] == pytest.approx(sum(c["seconds"] for c in rest["calls"]), abs=0.11)
    assert rest["ms_per_step"] == rest["calls"][1]["ms_per_step"] and rest["calls"][1]["device"] == "cpu"
    assert rest["calls"][1]["cpu"] == cpu_description() and rest["calls"][1]["cpu_cores"] == os.cpu_count()


def test_a_run_whose_params_stop_at_an_epoch_plans_to_end_there(patches: Path, mirror: Path, tmp_path: Path) -> None:
    """An experiment's own `stop_epoch` (Table 3's run without the residual stops after 14 of its schedule's 35
    epochs) is where its plan ends: trained that far, the run is finished."""
    summary = train(replace(TINY, epochs=3, stop_epoch=1), patches, mirror, tmp_path)
    assert summary["epochs_planned"] == summary["epochs_done"] == 1.0
    assert summary["steps_planned"] == summary["steps_done"] == summary["steps_per_epoch"]


def test_a_finished_run_called_again_keeps_its_record(patches: Path, mirror: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipeline rerun for an unrelated change finds the run finished: nothing is trained, nothing is lost."""
    from rlcsc import train as module

    def slow_save(*args, **kwargs) -> None:  # time passes after the last checkpoint, as on a slow disk
        real(*args, **kwargs)
        time.sleep(0.3)

    real = module.save_torch
    monkeypatch.setattr(module, "save_torch", slow_save)
    first = train(TINY, patches, mirror, tmp_path)
    again = train(TINY, patches, mirror, tmp_path)
    assert first["ms_per_step"] is not None and len(first["calls"]) == 1
    keep = ("calls", "ms_per_step", "seconds_wall", "seconds_training", "device", "precision", "curve", "steps_done")
    assert {k: again[k] for k in keep} == {k: first[k] for k in keep}


def test_a_run_its_time_limit_ended_trains_no_further(patches: Path, mirror: Path, tmp_path: Path) -> None:
    """`max_minutes` bounds the run's training time in all: a call that finds it spent trains nothing."""
    timed = replace(TINY, epochs=50, max_minutes=1e-6)
    first = train(timed, patches, mirror, tmp_path)
    assert first["status"] == "completed" and first["steps_done"] == TINY.log_every
    again = train(timed, patches, mirror, tmp_path)
    assert again["steps_done"] == first["steps_done"] and again["calls"] == first["calls"]
    more = train(replace(timed, max_minutes=1.0, epochs=1), patches, mirror, tmp_path)  # a longer limit extends it
    assert more["steps_done"] == more["steps_per_epoch"] and len(more["calls"]) == 2


def test_changed_identity_does_not_resume_a_stale_checkpoint(patches: Path, mirror: Path, tmp_path: Path,
                                                             capsys) -> None:
    train(TINY, patches, mirror, tmp_path, stop_after=3)
    other = train(replace(TINY, lr=0.02, epochs=1), patches, mirror, tmp_path)
    assert other["status"] == "completed" and other["epochs_done"] == 1
    assert "other lr" in capsys.readouterr().err
    train(replace(TINY, lr=0.02, epochs=1), patches, mirror, tmp_path / "fresh")
    assert same_weights(tmp_path / "model.pt", tmp_path / "fresh" / "model.pt")


def test_pairs_made_by_other_params_do_not_resume_a_run(patches: Path, mirror: Path, tmp_path: Path, capsys) -> None:
    """An edit of the augment or patch params makes other pairs: a finished run on the old ones is trained
    afresh on the new, not kept."""
    other = tmp_path / "patches"
    make_patches(patches.parent / "aug", other, PatchParams(chunk=8, seed=1), jobs=1)
    train(TINY, patches, mirror, tmp_path / "run")
    again = train(TINY, other, mirror, tmp_path / "run")
    assert "other training pairs" in capsys.readouterr().err and len(again["calls"]) == 1
    train(TINY, other, mirror, tmp_path / "fresh")
    assert same_weights(tmp_path / "run" / "model.pt", tmp_path / "fresh" / "model.pt")


def test_a_damaged_checkpoint_is_a_clear_error_and_kept(patches: Path, mirror: Path, tmp_path: Path) -> None:
    """A truncated checkpoint, or a model file put in its place, is never trained over."""
    train(TINY, patches, mirror, tmp_path / "run")
    whole = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    for damaged in (whole[:3000], (tmp_path / "run" / "model.pt").read_bytes()):
        (tmp_path / "run" / "checkpoint.pt").write_bytes(damaged)
        with pytest.raises(RlcscError, match="is not a readable checkpoint of `rlcsc train`"):
            train(TINY, patches, mirror, tmp_path / "run")
        assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == damaged


def test_non_finite_loss_fails_clearly_or_is_recorded(patches: Path, mirror: Path, tmp_path: Path) -> None:
    wild = replace(TINY, lr=1e12, clip=None, checkpoint_every=100, log_every=1)
    with pytest.raises(RlcscError, match="non-finite"):
        train(wild, patches, mirror, tmp_path / "fail")
    result = train(replace(wild, on_divergence="record"), patches, mirror, tmp_path / "record")
    assert result["status"].startswith("diverged at epoch 1, step ")
    # it diverged before its first periodic checkpoint: the model kept is the initial one, finite
    kept = weights(tmp_path / "record" / "model.pt")
    assert all(torch.isfinite(t).all() for t in kept.values())
    start = prepare(wild, torch.device("cpu"))[0].state_dict()
    assert all(torch.equal(kept[k], start[k]) for k in kept)
    saved = torch.load(tmp_path / "record" / "model.pt", weights_only=True)
    assert saved["status"] == result["status"]
    assert json.loads((tmp_path / "record" / "train_metrics.json").read_text())["status"] == result["status"]


def test_a_diverged_run_keeps_its_last_good_weights_and_is_finished(patches: Path, mirror: Path,
                                                                    tmp_path: Path) -> None:
    """The status names the step the kept weights come from, and the run's record ends there; a later call trains
    nothing and loses nothing."""
    wild = replace(TINY, lr=1e12, clip=None, log_every=1, on_divergence="record")
    result = train(wild, patches, mirror, tmp_path)
    diverged = int(result["status"].split(";")[0].rsplit(" ", 1)[1])
    assert result["status"] == f"diverged at epoch 1, step {diverged}; the weights of step 0 kept" and diverged > 0
    assert result["steps_done"] == 0 and result["curve"] == [] and result["calls"][0]["steps"] >= diverged
    again = train(wild, patches, mirror, tmp_path)
    keep = ("status", "calls", "steps_done", "curve", "seconds_training")
    assert {k: again[k] for k in keep} == {k: result[k] for k in keep}
    assert torch.load(tmp_path / "model.pt", weights_only=True)["status"] == result["status"]



def test_a_diverged_run_reports_the_score_of_the_weights_it_kept(patches: Path, mirror: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A divergence after a checkpoint, with snapshots between: the record ends at the checkpoint whose weights
    model.pt holds, and its last score (train.json's curve, train_metrics.json) is theirs, scored on restoring
    them, not that of a snapshot of the weights thrown away."""
    from rlcsc import train as training

    made = training.prepare

    def failing_from_step_6(*args: object) -> tuple:
        model, optimizer, step_fn = made(*args)
        taken = []

        def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            taken.append(1)
            loss, norm = step_fn(x, y)
            return (loss * float("nan") if len(taken) >= 6 else loss), norm

        return model, optimizer, step

    monkeypatch.setattr(training, "prepare", failing_from_step_6)
    p = replace(TINY, checkpoint_every=3, eval_every=2, log_every=1, on_divergence="record")
    result = train(p, patches, mirror, tmp_path)
    assert result["status"] == "diverged at epoch 1, step 6; the weights of step 3 kept"
    assert result["steps_done"] == 3 and [c["step"] for c in result["curve"]] == [2, 3]
    model = prepare(p, torch.device("cpu"))[0]
    model.load_state_dict(weights(tmp_path / "model.pt"))
    kept = Monitor(mirror, "Set5", 3, "fp32")(model)["psnr"]
    assert result["curve"][-1]["psnr"] == kept
    assert json.loads((tmp_path / "train_metrics.json").read_text())["set5_x3_psnr"] == kept


def test_the_speed_of_training_leaves_out_the_monitor_however_often_it_scores(patches: Path, mirror: Path,
                                                                            tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A monitor that takes 0.3 s at every host sync (every interval holds one) does not count as training: the
    ms per step is far below it. Training reads a clock that moves 1 ms at each reading and 0.3 s in the monitor,
    so the machine's load cannot move the result."""
    import rlcsc.train

    class Clock:
        now = 0.0

        def time(self) -> float:
            self.now += 0.001
            return self.now

    clock, scored = Clock(), Monitor.__call__

    def slow(self: Monitor, model: torch.nn.Module) -> dict:
        clock.now += 0.3
        return scored(self, model)

    monkeypatch.setattr(rlcsc.train, "time", clock)
    monkeypatch.setattr(Monitor, "__call__", slow)
    result = train(replace(TINY, log_every=1, eval_every=1, checkpoint_every=1000), patches, mirror, tmp_path)
    assert len(result["curve"]) == result["steps_done"] and result["ms_per_step"] < 100


def test_an_interruption_while_a_run_writes_its_files_leaves_none_of_them(patches: Path, mirror: Path,
                                                                          tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (or SIGTERM) as the last of model.pt, train.json and train_metrics.json is written: none is in
    place (no model beside another run's record), the final checkpoint is, and the next call writes all three."""
    write_text = Path.write_text

    def interrupted(path: Path, *args: object, **kwargs: object) -> int:
        if path.name.startswith(".train_metrics."):
            raise KeyboardInterrupt
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(TINY, patches, mirror, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    monkeypatch.undo()
    result = train(TINY, patches, mirror, tmp_path)
    assert result["status"] == "completed" and len(result["calls"]) == 1  # the checkpoint held the whole run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "model.pt", "train.json",
                                                          "train_metrics.json"]


def test_a_signal_after_the_last_host_sync_ends_the_call_once_the_run_is_written(
        patches: Path, mirror: Path, tmp_path: Path, ctrl_c_at_checkpoint) -> None:
    """Ctrl-C (or SIGTERM) as the run's last checkpoint is written, after the loop's last host sync: the run's files
    are written whole, and the call says it was interrupted (beside the run's summary), so that its caller stops
    rather than goes on."""
    ctrl_c_at_checkpoint(lambda state: state["epoch"] == TINY.epochs)  # the checkpoint that ends the run
    handler = signal.getsignal(signal.SIGINT)
    result = train(TINY, patches, mirror, tmp_path)
    summary = json.loads((tmp_path / "train.json").read_text())
    assert result == {**summary, "interrupted": True}
    assert summary["status"] == "completed" and summary["steps_done"] == summary["steps_planned"] == 16
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C is the caller's again


def test_a_divergence_is_dated_to_its_step_and_no_checkpoint_keeps_non_finite_weights(patches: Path, mirror: Path,
                                                                                        tmp_path: Path) -> None:
    """The status names the step whose loss or gradient was first non-finite, however far apart the host syncs
    are; and weights that overflowed under a finite loss end the run at the next sync, before a checkpoint
    could keep them."""
    wild = replace(TINY, lr=1e12, clip=None, on_divergence="record")
    every_step = train(replace(wild, log_every=1), patches, mirror, tmp_path / "one")
    sparse = train(replace(wild, log_every=6), patches, mirror, tmp_path / "six")
    first = every_step["status"].split(";")[0]
    assert first.startswith("diverged at epoch 1, step ") and sparse["status"].split(";")[0] == first
    assert sparse["calls"][0]["steps"] > int(first.rsplit(" ", 1)[1])  # found at a later sync
    overflow = replace(TINY, lr=3.2e36, clip=None, checkpoint_every=1, log_every=1)
    with pytest.raises(RlcscError, match="non-finite"):
        train(overflow, patches, mirror, tmp_path / "overflow")
    kept = torch.load(tmp_path / "overflow" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.isfinite(t).all() for t in kept.values())

def test_a_run_without_its_test_images_makes_no_folder(patches: Path, tmp_path: Path) -> None:
    """The monitor's test images are missing: one clear error, before the run's folder is made."""
    with pytest.raises(RlcscError, match=f"missing image {tmp_path / 'raw'}/Set5/"):
        train(TINY, patches, tmp_path / "raw", tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_cuda_requested_without_gpu_is_a_clear_error(patches: Path, mirror: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RlcscError, match="no CUDA GPU"):
        train(replace(TINY, device="cuda"), patches, mirror, tmp_path)


def torchrun(tmp_path: Path, p: TrainParams, patches: Path, mirror: Path, out: Path) -> subprocess.CompletedProcess:
    runner = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if runner is None:
        pytest.skip("torchrun not found beside the Python interpreter")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {k: v for k, v in vars(p).items()}, "experiments": {"tiny": {}}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RLCSC_DATA_MIRROR": str(mirror)}
    cmd = [runner, "--standalone", "--nproc_per_node", "2", "-m", "rlcsc.cli", "train", "--params", str(params),
           "--experiment", "tiny", "--patches", str(patches), "--raw", str(mirror), "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_ddp_on_cpu_with_gloo_matches_one_process(patches: Path, mirror: Path, tmp_path: Path) -> None:
    single = train(TINY, patches, mirror, tmp_path / "one")
    proc = torchrun(tmp_path, TINY, patches, mirror, tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = json.loads((tmp_path / "two" / "train.json").read_text())["curve"][-1]["psnr"]
    assert proc.stderr.count("completed: ") == 1  # the first process speaks for both
    assert f"\ncompleted: 2.0 epoch(s); Set5 x3 {last:.2f} dB\n" in proc.stderr
    a, b = weights(tmp_path / "one" / "model.pt"), weights(tmp_path / "two" / "model.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert single["status"] == "completed" and single["processes"] == 1
    assert json.loads((tmp_path / "two" / "train.json").read_text())["processes"] == 2


def test_each_process_trains_on_its_own_share_of_a_batch() -> None:
    """The same weights as one process could come from two that each trained on the whole batch: the shares of a
    batch are what make two processes twice as fast. Each takes one of `world` equal, disjoint shares."""
    dist = Distributed(torch.device("cpu"))
    batch = torch.arange(10, 22)
    for world in (1, 2, 3, 4):
        shares = []
        for rank in range(world):
            dist.world, dist.rank = world, rank
            shares.append(dist.share(batch))
        assert [len(s) for s in shares] == [len(batch) // world] * world
        assert sorted(torch.cat(shares).tolist()) == batch.tolist()


def test_ddp_processes_agree_when_only_one_sees_a_non_finite_loss(patches: Path, mirror: Path, tmp_path: Path) -> None:
    """A NaN input in the half batch of process 1 at step 1: process 0's loss is finite there, yet
    both must stop together (else process 0 waits forever in the next gradient exchange)."""
    poisoned = tmp_path / "patches"
    shutil.copytree(patches, poisoned)
    inputs = np.load(poisoned / "inputs.npy", mmap_mode="r+")
    rows = np.sort(np.load(poisoned / "keep.npy")[: TINY.pairs])
    first_batch = epoch_order(TINY.seed, 0, len(rows))[: TINY.batch]
    inputs[rows[first_batch[1]]] = np.nan  # position 1 of the batch goes to process 1 (rank::world)
    inputs.flush()
    seal(poisoned)  # a patch set made so, not one damaged since
    p = replace(TINY, log_every=1, on_divergence="record")
    proc = torchrun(tmp_path, p, poisoned, mirror, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "train.json").read_text())
    assert summary["status"] == "diverged at epoch 1, step 1; the weights of step 0 kept"
    assert all(torch.isfinite(t).all() for t in weights(tmp_path / "out" / "model.pt").values())


def test_the_fast_budget_runs_in_miniature(patches: Path, mirror: Path, tmp_path: Path) -> None:
    """budget: fast's recipe, with the network and data scaled down to a few seconds on a CPU."""
    from rlcsc.record import resolved

    fast = resolved(Path(__file__).resolve().parents[1] / "params.yaml", "fast", "K25")["train"]
    per_epoch = 1_929_728 // fast.batch
    assert fast.max_steps < fast.epochs * per_epoch  # max_steps ends the run and its schedule
    mini_steps = round(fast.max_steps / per_epoch * 8)  # the same fraction of an epoch of 8 steps
    mini = replace(fast, width=1 / 32, pairs=64, batch=8, warmup=4, eval_every=4, max_steps=mini_steps, device="cpu")
    summary = train(mini, patches, mirror, tmp_path)
    assert summary["status"] == "completed" and summary["steps_done"] == mini_steps
    assert summary["epochs_planned"] == mini_steps / 8 and summary["steps_planned"] == mini_steps
    lrs = [c["lr"] for c in summary["curve"]]
    assert lrs[-1] < 0.05 * fast.lr < lrs[0] <= fast.lr  # warm-up, then a cosine decay towards zero
    assert summary["train"]["optimizer"] == "adamw" and summary["train"]["clip"] is None
    assert all(c["clipped_fraction"] is None for c in summary["curve"])
    assert summary["recipe_changes"]["optimizer"] == "adamw" and summary["recipe_changes"]["zero_last"] is True


def test_a_cut_fast_run_resumes_to_the_same_weights(patches: Path, mirror: Path, tmp_path: Path) -> None:
    """AdamW's moments, the warm-up and the cosine decay over max_steps survive a cut past an epoch's end."""
    from rlcsc.record import resolved

    fast = resolved(Path(__file__).resolve().parents[1] / "params.yaml", "fast", "K25")["train"]
    mini = replace(fast, recursions=2, width=1 / 32, pairs=64, batch=8, warmup=4, eval_every=4, max_steps=12,
                   checkpoint_every=100, compile=False, device="cpu")
    straight = train(mini, patches, mirror, tmp_path / "a")
    assert (train(mini, patches, mirror, tmp_path / "b", stop_after=10)
            == {"status": "interrupted", "epoch": 1, "step": 2, "interrupted": True})
    resumed = train(mini, patches, mirror, tmp_path / "b")
    assert resumed["status"] == "completed" and resumed["steps_done"] == 12
    assert same_weights(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")
    assert resumed["curve"] == [{**c, "seconds": r["seconds"]}
                               for c, r in zip(straight["curve"], resumed["curve"], strict=True)]


def test_precision_is_set_for_the_code_that_asks_and_restored_after_it() -> None:
    from rlcsc.device import using_precision

    def flags() -> tuple[bool, bool]:
        return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32

    before = flags()
    with using_precision("cuda", "tf32"):  # the switches exist without a GPU
        assert flags() == (True, True)
        with using_precision("cuda", "fp32"):
            assert flags() == (False, False)
        assert flags() == (True, True)
    assert flags() == before
    with pytest.raises(RuntimeError), using_precision("cuda", "bf16"):
        raise RuntimeError
    assert flags() == before


@pytest.mark.parametrize("loss_name", ["l2", "l1"])
def test_a_training_step_is_the_paper_s_sgd_update_computed_by_hand(loss_name: str) -> None:
    """Section 5.2, by hand: the loss of eq. 14 (the squared error summed over each patch, averaged over the
    batch; `l1`: the absolute error, likewise), its gradient's global L2 norm clipped to theta = 0.4, then SGD
    with momentum 0.9 and weight decay 1e-4 at learning rate 0.1. Two steps, so that the momentum buffer carries
    the first into the second."""
    per_pixel = {"l2": torch.square, "l1": torch.abs}[loss_name]
    p = replace(TINY, lr=0.1, momentum=0.9, weight_decay=1e-4, clip=0.4, loss=loss_name)
    model, _, step = prepare(p, torch.device("cpu"))
    names = [k for k, _ in model.named_parameters()]
    w = [t.detach().clone() for _, t in model.named_parameters()]
    twin = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    buf = None
    for _ in range(2):
        x, y = torch.rand(4, 1, 12, 12, generator=gen), torch.rand(4, 1, 12, 12, generator=gen)
        for t, v in zip(twin.parameters(), w):
            t.data.copy_(v)
        err = twin(x) - y
        loss = sum(float(per_pixel(err[i].detach()).sum()) for i in range(4)) / 4  # per patch, then the mean
        grads = torch.autograd.grad(per_pixel(err).sum() / 4, list(twin.parameters()))
        norm = math.sqrt(sum(float(g.square().sum()) for g in grads))
        assert norm > 0.4  # the clipping acts
        scale = 0.4 / (norm + 1e-6)  # torch's clip_grad_norm_
        d = [g * scale + 1e-4 * v for g, v in zip(grads, w)]
        buf = d if buf is None else [0.9 * b + e for b, e in zip(buf, d)]
        w = [v - 0.1 * b for v, b in zip(w, buf)]
        got_loss, got_norm = step(x, y)
        assert float(got_loss) == pytest.approx(loss, rel=1e-5) and float(got_norm) == pytest.approx(norm, rel=1e-5)
    got = dict(model.named_parameters())
    for name, v in zip(names, w):
        torch.testing.assert_close(got[name].detach(), v, rtol=2e-6, atol=1e-7)  # weight decay moves them 3e-5


def test_each_step_trains_at_the_learning_rate_the_schedule_gives_it(patches: Path, mirror: Path,
                                                                     tmp_path: Path) -> None:
    """The schedule reaches the optimiser. A 2-step warm-up's first step trains at half the rate: the same weights
    as a step at that rate without warm-up. Divided by 10 after every epoch (lr_step 1, 8 steps an epoch), the
    8th step trains at lr and the 9th at lr / 10."""
    half = replace(TINY, lr=0.02, warmup=2)
    train(half, patches, mirror, tmp_path / "warm-up", stop_after=1)
    train(TINY, patches, mirror, tmp_path / "plain", stop_after=1)  # lr 0.01
    assert same_weights(tmp_path / "warm-up" / "checkpoint.pt", tmp_path / "plain" / "checkpoint.pt")
    train(replace(TINY, lr_step=1), patches, mirror, tmp_path / "step", stop_after=9)
    ckpt = torch.load(tmp_path / "step" / "checkpoint.pt", weights_only=True)
    assert ckpt["curve"][0]["step"] == 8 and ckpt["curve"][0]["lr"] == pytest.approx(0.01)  # the 8th step's
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.001)  # the 9th step's


def test_the_monitor_scores_a_network_that_adds_nothing_as_bicubic(mirror: Path) -> None:
    """H at zero: with the residual connection the output is the interpolated input (eq. 12), whose Set5 x3 PSNR
    is Table 1's bicubic 30.39 dB, and the residual image R is zero; without it the output, and so R, is zero."""
    monitor = Monitor(mirror, "Set5", 3, "fp32")
    identity = prepare(replace(TINY, zero_last=True), torch.device("cpu"))[0]
    scores = monitor(identity)
    assert scores["psnr"] == pytest.approx(30.39, abs=0.05) and scores["residual_mean"] == pytest.approx(0, abs=1e-6)
    assert scores["zero_fraction"] < 0.01 and scores["h_bias"] is None
    nothing = prepare(replace(TINY, zero_last=True, residual=False, bias=True), torch.device("cpu"))[0]
    scores = monitor(nothing)
    assert scores["residual_mean"] == 0 and scores["zero_fraction"] == 1 and scores["h_bias"] == 0


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_adds_weight_decay_to_the_gradient_and_adamw_decays_the_weights(optimizer: str) -> None:
    """Adam's first step moves each weight by lr against the sign of its gradient (its moments are g and g^2, so
    the step is g / |g|). Adam's weight decay is part of that gradient (g + wd w); AdamW's shrinks the weights
    apart from it (w (1 - lr wd))."""
    p = replace(TINY, optimizer=optimizer, lr=0.01, weight_decay=0.5, clip=None)
    model, _, step = prepare(p, torch.device("cpu"))
    w = {k: t.detach().clone() for k, t in model.named_parameters()}
    twin = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(2)
    x, y = torch.rand(4, 1, 12, 12, generator=gen), torch.rand(4, 1, 12, 12, generator=gen)
    grads = dict(zip(w, torch.autograd.grad((twin(x) - y).square().sum() / 4, list(twin.parameters()))))
    step(x, y)
    for k, t in model.named_parameters():
        if optimizer == "adam":
            g = grads[k] + 0.5 * w[k]
            expected = w[k] - 0.01 * g / (g.abs() + 1e-8)
        else:
            expected = w[k] * (1 - 0.01 * 0.5) - 0.01 * grads[k] / (grads[k].abs() + 1e-8)
        torch.testing.assert_close(t.detach(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("saved,own", [("fused", "foreach"), ("foreach", "fused")])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_checkpoint_resumes_with_the_kernels_of_the_device_it_resumes_on(optimizer: str, saved: str,
                                                                           own: str) -> None:
    """The optimizer state of a run saved with one kind of kernels (a GPU's fused, a CPU's foreach; both compute on
    this CPU) resumes in an optimizer of the other kind, which keeps its own, with the saved moments and step
    count: its next step is the one the saving optimizer takes."""
    p = replace(TINY, optimizer=optimizer, lr=0.01, clip=None)
    model = prepare(p, torch.device("cpu"))[0]
    twin = copy.deepcopy(model)
    kind = torch.optim.SGD if optimizer == "sgd" else torch.optim.AdamW
    extra = {"momentum": p.momentum} if optimizer == "sgd" else {}
    try:
        saving, resuming = (kind(m.parameters(), lr=p.lr, weight_decay=p.weight_decay, **extra, **{k: True})
                            for m, k in ((model, saved), (twin, own)))
    except RuntimeError as err:  # torch before 2.4 has no fused kernels on a CPU
        pytest.skip(str(err))
    gen = torch.Generator().manual_seed(3)
    batches = [(torch.rand(4, 1, 12, 12, generator=gen), torch.rand(4, 1, 12, 12, generator=gen)) for _ in range(3)]

    def step(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad()
        ((net(x) - y).square().sum() / 4).backward()
        opt.step()

    for x, y in batches[:2]:
        step(model, saving, x, y)
    twin.load_state_dict(model.state_dict())
    load_optimizer(resuming, copy.deepcopy(saving.state_dict()))  # as read from a checkpoint: no tensor shared
    assert all(g[own] and not g.get(saved) for g in resuming.param_groups)
    step(model, saving, *batches[2])
    step(twin, resuming, *batches[2])
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_each_epoch_visits_every_pair_once_in_an_order_of_its_own() -> None:
    """The data order is a function of the seed and the epoch: a permutation of the pairs, another each epoch and
    each seed, the same on every call (so a resumed run draws what an uninterrupted one would)."""
    orders = [epoch_order(0, e, 100) for e in range(3)]
    assert all(sorted(o) == list(range(100)) for o in orders)
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    assert np.array_equal(epoch_order(0, 1, 100), orders[1]) and not np.array_equal(epoch_order(1, 1, 100), orders[1])


def test_a_run_on_part_of_the_set_draws_the_first_pairs_of_its_shuffle(patches: Path) -> None:
    """`pairs` keeps the first pairs of the shuffled set (keep.npy's order), not the first pairs of the files; a
    batch holds their inputs as stored and their labels scaled from 0-255 to 0-1."""
    from rlcsc.train import Batches

    data = PatchSet.open(patches)
    assert not np.array_equal(np.sort(data.keep[:16]), np.sort(data.keep)[:16])  # the two readings differ here
    batches = Batches(data, 16, torch.device("cpu"))
    x, y = batches(np.arange(16))
    rows = np.sort(data.keep[:16])
    assert torch.equal(x[:, 0], torch.from_numpy(np.asarray(data.inputs[rows], np.float32)))
    assert torch.equal(y[:, 0] * 255, torch.from_numpy(np.asarray(data.labels[rows], np.float32)))
    resident = Batches(data, 16, torch.device("cpu"), resident=True)  # as on a GPU with room: gathered in memory
    assert resident.on_device and not batches.on_device
    for epoch in (0, 1):
        order, kept = resident.order(7, epoch), batches.order(7, epoch)
        assert isinstance(order, torch.Tensor) and np.array_equal(order.numpy(), kept)
        for got, want in zip(resident(order[:5]), batches(kept[:5])):
            assert got.dtype == want.dtype == torch.float32 and torch.equal(got, want)


def test_a_snapshot_summarises_its_interval_s_gradient_norms() -> None:
    """The loss is the interval's mean; the gradient norms their median and maximum, and the fraction of steps
    whose norm exceeded theta = 0.4 (those clipping shortened)."""
    from rlcsc.train import _snapshot

    norms = torch.tensor([0.1, 0.3, 0.5, 2.0, 0.2])
    point = _snapshot(TrainParams(), 30, 10, 0.1, torch.tensor([1.0, 2.0, 6.0]), norms, 12.34, {"psnr": 30.0})
    assert point == pytest.approx({"step": 30, "epoch": 3.0, "seconds": 12.3, "lr": 0.1, "loss": 3.0,
                                   "grad_norm_median": 0.3, "grad_norm_max": 2.0, "clipped_fraction": 0.4, "steps": 5,
                                   "psnr": 30.0})
    assert _snapshot(replace(TrainParams(), clip=None), 30, 10, 0.1, torch.ones(1), norms, 1.0,
                     {})["clipped_fraction"] is None


def test_the_speed_is_the_median_interval_after_the_first_tenth() -> None:
    """ms/step between host syncs: 100 ms a step, but for a compilation at the start (before a tenth of the run's
    steps) and one interval paused by the monitor's evaluation; neither moves the median."""
    from rlcsc.train import _ms_per_step

    syncs = [(1, 0.0), (10, 9.0), (20, 10.0), (30, 11.0), (40, 14.0), (50, 15.0), (60, 16.0), (70, 17.0), (80, 18.0),
             (90, 19.0), (100, 20.0)]
    assert _ms_per_step(syncs) == pytest.approx(100.0)
    assert _ms_per_step(syncs[:1]) is None


def test_every_param_that_changes_the_weights_is_part_of_a_run_s_identity() -> None:
    """A checkpoint resumes only under the same network, data, recipe, seed and precision; what only watches or
    places the run (logging, checkpoints, stop points, device, compile) may change between its calls."""
    base = TrainParams()
    changes = {"arch": "drrn", "recursions": 5, "features": 64, "codes": 64, "units": 3, "residual": False,
               "bias": True, "width": 0.5, "zero_last": True, "pairs": 10, "batch": 64, "seed": 1, "optimizer": "adam",
               "lr": 0.2, "schedule": "cosine", "lr_step": 5, "warmup": 3, "momentum": 0.5, "weight_decay": 0.0,
               "loss": "l1", "clip": None, "precision": "fp32", "eval_dataset": "Set14", "eval_scale": 2}
    for key, value in changes.items():
        assert replace(base, **{key: value}).identity() != base.identity(), key
    watching = {"stop_epoch": 3, "max_minutes": 5.0, "eval_every": 7, "log_every": 3, "checkpoint_every": 9,
                "on_divergence": "record", "device": "cpu", "compile": False, "epochs": 40, "max_steps": 100}
    for key, value in watching.items():
        assert replace(base, **{key: value}).identity() == base.identity(), key


def test_a_run_cut_within_a_snapshot_interval_resumes_that_interval(patches: Path, mirror: Path,
                                                                    tmp_path: Path) -> None:
    """Cut at step 5, inside the interval that began after the snapshot of step 3 (eval_every 3): the resumed run's
    snapshot of step 6 still covers steps 4 to 6, the loss and gradient norms of those before the cut included."""
    p = replace(TINY, eval_every=3, epochs=1)
    straight = train(p, patches, mirror, tmp_path / "a")
    assert train(p, patches, mirror, tmp_path / "b", stop_after=5)["step"] == 5
    resumed = train(p, patches, mirror, tmp_path / "b")
    assert [c["steps"] for c in resumed["curve"]] == [3, 3, 2]
    assert resumed["curve"] == [{**c, "seconds": r["seconds"]}
                               for c, r in zip(straight["curve"], resumed["curve"], strict=True)]


def test_fewer_pairs_than_a_batch_is_a_clear_error(patches: Path, mirror: Path, tmp_path: Path) -> None:
    with pytest.raises(RlcscError, match="^4 training pairs make no batch of 8$"):
        train(replace(TINY, pairs=4), patches, mirror, tmp_path)


def test_more_pairs_than_the_patch_set_holds_is_a_clear_error(patches: Path, mirror: Path, tmp_path: Path) -> None:
    held = len(PatchSet.open(patches))
    with pytest.raises(RlcscError, match=f"^train.pairs {held + 1} is more than the {held} pairs in "):
        train(replace(TINY, pairs=held + 1), patches, mirror, tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_warm_up_as_long_as_the_run_is_a_clear_error(patches: Path, mirror: Path, tmp_path: Path) -> None:
    cosine = replace(TINY, optimizer="adamw", lr=1e-3, schedule="cosine")  # 64 pairs, batch 8, 2 epochs: 16 steps
    with pytest.raises(RlcscError, match="^train.warmup 16 is not shorter than the 16 steps the cosine schedule "):
        train(replace(cosine, warmup=16), patches, mirror, tmp_path)
    with pytest.raises(RlcscError, match="^train.warmup 10 is not shorter than the 10 steps "):
        train(replace(cosine, warmup=10, max_steps=10), patches, mirror, tmp_path)  # max_steps is where it decays
    assert not any(tmp_path.iterdir())
