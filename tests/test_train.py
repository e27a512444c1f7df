"""Training: resumption equals an uninterrupted run, DDP on CPU, divergence, devices."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from rlcsc.data.augment import AugmentParams, augment
from rlcsc.data.patches import PatchParams, make_patches
from rlcsc.errors import RlcscError
from rlcsc.train import TrainParams, learning_rate, train

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


def test_learning_rate_is_divided_by_ten_every_step() -> None:
    p = TrainParams()
    assert [learning_rate(p, e) for e in (0, 9, 10, 19, 20, 34)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.0001])


def test_resume_after_interruption_equals_uninterrupted_run(patches: Path, mirror: Path, tmp_path: Path) -> None:
    straight = train(TINY, patches, mirror, tmp_path / "a")
    assert straight["status"] == "completed" and straight["epochs_completed"] == 2
    first = train(TINY, patches, mirror, tmp_path / "b", stop_after=5)  # killed mid-epoch
    assert first == {"status": "interrupted", "epoch": 0, "step": 5}
    assert not (tmp_path / "b" / "model.pt").exists()
    resumed = train(TINY, patches, mirror, tmp_path / "b")
    assert resumed["status"] == "completed"
    a, b = weights(tmp_path / "a" / "model.pt"), weights(tmp_path / "b" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["psnr"] for h in resumed["history"]] == [h["psnr"] for h in straight["history"]]


def test_changed_params_do_not_resume_a_stale_checkpoint(patches: Path, mirror: Path, tmp_path: Path) -> None:
    train(TINY, patches, mirror, tmp_path, stop_after=3)
    other = train(replace(TINY, lr=0.02, epochs=1), patches, mirror, tmp_path)
    assert other["status"] == "completed" and other["epochs_completed"] == 1


def test_non_finite_loss_fails_clearly_or_is_recorded(patches: Path, mirror: Path, tmp_path: Path) -> None:
    wild = replace(TINY, lr=1e12, clip=1e30, checkpoint_every=1, log_every=1)
    with pytest.raises(RlcscError, match="non-finite"):
        train(wild, patches, mirror, tmp_path / "fail")
    result = train(replace(wild, on_divergence="record"), patches, mirror, tmp_path / "record")
    assert result["status"].startswith("diverged at epoch 1")
    w = weights(tmp_path / "record" / "model.pt")
    assert all(torch.isfinite(t).all() for t in w.values())  # the last good checkpoint


def test_cuda_requested_without_gpu_is_a_clear_error(patches: Path, mirror: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RlcscError, match="no CUDA GPU"):
        train(replace(TINY, device="cuda"), patches, mirror, tmp_path)


def test_ddp_on_cpu_with_gloo_matches_one_process(patches: Path, mirror: Path, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found beside the Python interpreter")
    tiny = {k: v for k, v in vars(TINY).items()}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": tiny, "experiments": {"tiny": {}}}))
    single = train(TINY, patches, mirror, tmp_path / "one")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RLCSC_DATA_MIRROR": str(mirror)}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "rlcsc.cli", "train", "--params", str(params),
           "--experiment", "tiny", "--patches", str(patches), "--raw", str(mirror), "--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = weights(tmp_path / "one" / "model.pt"), weights(tmp_path / "two" / "model.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert single["status"] == "completed"


def test_precision_check_trains_both_runs_from_one_seed(patches: Path, mirror: Path, monkeypatch) -> None:
    """The bf16 check's plumbing, run where both precisions compute in fp32: the scores must agree."""
    from rlcsc import benchmark

    monkeypatch.setattr(benchmark, "pick_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "stand-in")
    result = benchmark.training_precision(TINY, patches, mirror, steps=5)
    assert result["fp32"]["status"] == result["bf16"]["status"] == "completed"
    assert result["fp32"]["psnr"] > 10 and result["difference_db"] == 0.0
    with pytest.raises(RlcscError, match="need"):
        benchmark.training_precision(TINY, patches, mirror, steps=10**6)
