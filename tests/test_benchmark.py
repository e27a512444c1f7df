"""`rlcsc benchmark` and `rlcsc memory` on the CPU, the evaluation's GPU pipeline (run here with bicubic), core
sharing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from rlcsc import provenance
from rlcsc.cli import main
from rlcsc.data.augment import AugmentParams, augment
from rlcsc.data.patches import PatchParams, PatchSet, make_patches
from rlcsc.evaluate import bicubic, evaluate
from rlcsc.memory import TABLE4, TABLE4_SIZES, count_training_memory, training_memory
from rlcsc.parallel import pool

TINY = ("train: {recursions: 2, features: 4, codes: 8, batch: 4, pairs: 40, epochs: 3, device: cpu}\n"
        "experiments: {tiny: {}}\n")


def tiny_model(path: Path) -> Path:
    """An untrained RL-CSC of one recursion and 4 channels, saved at `path` as `rlcsc train` saves a model."""
    from rlcsc.atomic import save_torch
    from rlcsc.inference import model_state
    from rlcsc.models.rlcsc import RLCSC, RLCSCConfig

    torch.manual_seed(0)
    save_torch(model_state(RLCSC(RLCSCConfig(recursions=1, features=4, codes=4))), path)
    return path


def test_benchmark_train_runs_on_cpu(tmp_path: Path, monkeypatch) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(TINY)
    out = tmp_path / "train.json"
    argv = ["benchmark", "train", "--params", str(params), "--experiment", "tiny", "--steps", "3", "--warmup", "1"]
    assert main(argv + ["--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["ms_per_step"] > 0 and result["tflops"] > 0
    assert 0 <= result["peak_memory_mib"] < 200  # the tiny steps' own: not the interpreter's and torch's (300+ MiB)
    assert result["steps_per_epoch"] == 10
    assert result["projected_run_h"] == pytest.approx(3 * 10 * result["ms_per_step"] / 3.6e6)
    assert result["projected_epoch_min"] == pytest.approx(10 * result["ms_per_step"] / 60000)
    # 9 (1*4 + 4*4 + 4*8 + 2*8*8 + 8*4 + 4*1) multiply-adds per pixel, 2 flops each, x3 for backward
    assert result["tflop_per_step"] == pytest.approx(3 * 2 * 9 * 216 * 4 * 33 * 33 / 1e12)
    for stop, steps in (("stop_epoch: 2", 20), ("max_steps: 25", 25)):  # a run ends where its params end it
        params.write_text(TINY.replace("device: cpu", f"device: cpu, {stop}"))
        assert main(argv + ["--out", str(tmp_path / f"{steps}.json")]) == 0
        result = json.loads((tmp_path / f"{steps}.json").read_text())
        assert result["projected_run_h"] == pytest.approx(steps * result["ms_per_step"] / 3.6e6)
    from rlcsc import benchmark, train

    calls = []
    monkeypatch.setattr(benchmark, "prepare", lambda *a: calls.append(a) or train.prepare(*a))
    assert main(argv + ["--steps", "1"]) == 0 and len(calls) == 1  # the very step `rlcsc train` runs


def test_an_out_that_could_not_take_the_result_is_refused_before_anything_is_measured(
        tmp_path: Path, monkeypatch, one_line_error) -> None:
    """An existing file (a measurement is never written over), a folder, or a name inside a file: one line before the
    minutes of measurement, not after them. `rlcsc memory` replaces its file, but refuses the other two alike."""
    from rlcsc import benchmark, memory

    monkeypatch.setattr(benchmark, "train_step", lambda *a: pytest.fail("measured before --out was checked"))
    monkeypatch.setattr(memory, "training_memory", lambda *a: pytest.fail("counted before --out was checked"))
    params = tmp_path / "params.yaml"
    params.write_text(TINY)
    out = tmp_path / "kept.json"
    out.write_text('{"ms_per_step": 1}\n')
    for target, said in ((out, f"{out} already exists; give another --out or move it away"),
                         (tmp_path, f"{tmp_path} is a folder; name the file the result goes to"),
                         (out / "x" / "y.json", f"{out} (in {out / 'x' / 'y.json'}) is a file, not a folder")):
        argv = ["benchmark", "train", "--params", str(params), "--experiment", "tiny", "--out", str(target)]
        assert one_line_error(argv).endswith(said)
        if target != out:
            assert one_line_error(["memory", "--out", str(target)]).endswith(said)
    assert out.read_text() == '{"ms_per_step": 1}\n'


def test_an_option_the_measurement_does_not_read_is_refused(tmp_path: Path, monkeypatch, one_line_error) -> None:
    """`--model` given to `benchmark train` (which times an untrained network) is an error, not silently ignored."""
    from rlcsc import benchmark

    monkeypatch.setattr(benchmark, "train_step", lambda *a: pytest.fail("measured with an unread option"))
    monkeypatch.setattr(benchmark, "winograd_layers", lambda *a: pytest.fail("measured with an unread option"))
    for argv, said in ((["train", "--model", "m.pt"], "benchmark train does not read --model; it reads --params, "
                                                       "--experiment, --warmup, --steps (and --out)"),
                       (["winograd", "--datasets", "Set5", "--batch", "7"], "benchmark winograd does not read "
                                                                            "--batch, --datasets; it reads --steps")):
        assert said in one_line_error(["benchmark", *argv])


def test_benchmark_evaluate_times_the_evaluate_block(mirror: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(TINY + "evaluate: {datasets: [Set5], scales: [3, 4], ifc: false}\n")
    out = tmp_path / "evaluate.json"
    argv = ["benchmark", "evaluate", "--params", str(params), "--experiment", "tiny", "--raw", str(mirror)]
    assert main(argv + ["--jobs", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 10 and result["seconds"] > 0 and result["precision"] == "fp32"
    assert result["images_per_s"] == pytest.approx(10 / result["seconds"])
    assert result["model"].startswith("untrained") and "psnr_tf32_minus_fp32" not in result


class InProcessBicubic:
    """Bicubic through the path a GPU network takes: called in this process, in order, on the ILR
    image that the torch `imresize` computed."""

    in_process, device = True, "cpu"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, ilr: torch.Tensor, scale: int):
        assert ilr.dtype == torch.float64
        self.calls += 1
        return bicubic(ilr.numpy(), scale)


def test_in_process_path_scores_like_the_worker_path(mirror: Path) -> None:
    upscale = InProcessBicubic()
    gpu_path = evaluate(upscale, mirror, ["Set5", "Set14"], [2, 4], with_ifc=True, jobs=2)
    worker_path = evaluate(bicubic, mirror, ["Set5", "Set14"], [2, 4], with_ifc=True, jobs=2)
    assert upscale.calls == 38
    assert gpu_path == worker_path


def test_workers_share_the_cores() -> None:
    with pool(2) as workers:
        threads = workers.submit(torch.get_num_threads).result()
        omp = workers.submit(os.getenv, "OMP_NUM_THREADS").result()
    assert threads == max(1, os.cpu_count() // 2) and omp == str(threads)


def test_counted_memory_is_saved_activations_plus_three_copies_of_the_weights() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    counted = count_training_memory(net, batch=2, patch=5)
    # the conv saves its input (2x1x5x5) and the ReLU its output (2x4x5x5); the weights are not activations
    assert counted["activations"] * 2**20 == (2 * 1 * 25 + 2 * 4 * 25) * 4
    assert counted["weights+grads+momentum"] * 2**20 == 3 * (4 * 9 + 4) * 4


def test_table4_settings_scale_with_the_batch() -> None:
    rows = {(r["model"], r["layers"], r["batch"], r["patch"]): r for r in training_memory()["rows"]}
    assert len(rows) == 9
    for model, layers in (("RL-CSC", 30), ("DRRN", 20), ("DRRN", 52)):
        small, large = rows[model, layers, 64, 31], rows[model, layers, 128, 31]
        # BatchNorm's per-channel statistics are the only saved tensors that do not grow with the batch
        assert large["counted_activations_mib"] == pytest.approx(2 * small["counted_activations_mib"], rel=1e-4)
    # more recursive units save more: B1U25 above B1U9
    assert rows["DRRN", 52, 128, 33]["counted_total_mib"] > rows["DRRN", 20, 128, 33]["counted_total_mib"]


def test_rlcsc_memory_writes_table4_s_rows(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`rlcsc memory` writes every network of Table 4 at every batch and patch size, into a folder it makes."""
    out = tmp_path / "results" / "table4.json"
    assert main(["memory", "--out", str(out)]) == 0
    said = capsys.readouterr().err.strip().splitlines()[-1]
    result = json.loads(out.read_text())
    assert result["torch"] == torch.__version__ and result["commit"] == provenance.commit() and result["date"]
    assert [(r["model"], r["layers"], r["batch"], r["patch"]) for r in result["rows"]] == [
        (*network, *size) for network in TABLE4 for size in TABLE4_SIZES]
    assert all(0 < r["counted_activations_mib"] < r["counted_total_mib"] for r in result["rows"])
    if not torch.cuda.is_available():
        assert result["gpu"] is None and all(r["cuda_peak_mib"] is None for r in result["rows"])
        assert said == f"Table 4 memory (counted only: no GPU here, so no CUDA peak) written to {out}"



def test_table4_builds_the_networks_of_the_paper_s_depths() -> None:
    """Table 4's networks have the paper's depths: RL-CSC of 30 layers (K = 25, K + 5), DRRN B1U9 of 20 and B1U25
    of 52 (2U + 2); and they are measured at every batch and patch size the paper's Table 4 gives."""
    from rlcsc.inference import build
    from rlcsc.memory import TABLE4, TABLE4_SIZES
    from rlcsc.reference import table

    assert {key: build(arch, config).depth for key, (arch, config) in TABLE4.items()} == {
        ("RL-CSC", 30): 30, ("DRRN", 20): 20, ("DRRN", 52): 52}
    paper = table("table4")
    assert set(TABLE4) == set(zip(paper.model, paper.layers))
    assert set(TABLE4_SIZES) == set(zip(paper.batch, paper.patch))


def test_a_variant_is_judged_against_fp32_grey_level_by_grey_level() -> None:
    """Two 16x16 images scored at x2 (a 12x12 interior once shaved): the first variant output equals fp32's, the
    second moves 16 interior pixels by 1 grey level and 8 by 2 (and the shaved border by 5, which does not
    count). fp32's error is one pixel 10 grey levels off (MSE 100/144), the variant's MSE is (100 + 16 + 32)/144."""
    import math

    from rlcsc.benchmark import _psnr, _quality

    hr = np.full((16, 16), 100 / 255)
    exact = hr.copy()
    exact[5, 5] = 110 / 255
    out = exact.copy()
    out[2, 2:10] += 2 / 255
    out[3:5, 2:10] += 1 / 255
    out[0, :] += 5 / 255
    pairs, exacts = [(hr, hr), (hr, hr)], [exact, exact]
    quality = _quality(pairs, [exact, out], exacts, _psnr(pairs, exacts, 2), 2)
    change = 10 * math.log10(100 / 148)
    assert quality["max_grey_difference"] == 2 and quality["share_over_1_grey"] == 8 / 288
    assert quality["largest_image_change_db"] == pytest.approx(change)
    assert quality["psnr_change_db"] == pytest.approx(change / 2)
    assert quality["psnr"] == pytest.approx(10 * math.log10(255**2 / (100 / 144)) + change / 2)


def test_input_precision_scores_float32_inputs_by_the_protocol_and_float16_against_them(mirror: Path,
                                                                                       tmp_path: Path) -> None:
    from rlcsc.benchmark import input_precision
    from rlcsc.evaluate import summarize
    from rlcsc.inference import Network

    model = tiny_model(tmp_path / "m.pt")
    result = input_precision(model, mirror)
    protocol = summarize(evaluate(Network(model), mirror, ["Set5"], [3], False, jobs=1))["Set5"]["x3"]["psnr"]
    assert result["psnr_float32"] == pytest.approx(protocol, abs=1e-6)
    assert result["difference_db"] == result["psnr_float32"] - result["psnr_float16"] != 0


def test_benchmark_input_precision_scores_the_model_it_is_given(mirror: Path, tmp_path: Path) -> None:
    """`rlcsc benchmark input-precision`: --model and --raw reach the measurement, whose result --out holds."""
    model, out = tiny_model(tmp_path / "m.pt"), tmp_path / "input.json"
    argv = ["benchmark", "input-precision", "--model", str(model), "--raw", str(mirror), "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["what"] == "input precision" and result["model"] == str(model)
    assert (result["dataset"], result["scale"]) == ("Set5", 3)
    assert result["difference_db"] == result["psnr_float32"] - result["psnr_float16"]


def test_batch_reads_are_timed_after_the_warm_up_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first 20 batches (the page cache filling) take 1 s each on a fake clock, the rest 2 ms: none of the
    first is among the timed reads."""
    from rlcsc import benchmark

    clock = {"now": 0.0, "reads": 0}

    class Patches:
        @classmethod
        def open(cls, folder: Path) -> Patches:
            return cls()

        def __len__(self) -> int:
            return 1000

    class Batches:
        def __init__(self, data: Patches, n: int, device: torch.device) -> None:
            assert n == 1000 and device.type == "cpu"

        def __call__(self, positions: np.ndarray) -> None:
            assert len(positions) == 16 and 0 <= positions.min() and positions.max() < 1000
            clock["now"] += 1.0 if clock["reads"] < 20 else 0.002
            clock["reads"] += 1

    monkeypatch.setattr(benchmark, "PatchSet", Patches)
    monkeypatch.setattr(benchmark, "Batches", Batches)
    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: clock["now"])
    result = benchmark.read_batches(Path("unused"), batch=16, steps=30)
    assert clock["reads"] == 50 and (result["pairs"], result["batch"], result["steps"]) == (1000, 16, 30)
    assert result["median_ms"] == pytest.approx(2.0) and result["p95_ms"] == pytest.approx(2.0)


def test_benchmark_read_times_batches_of_the_size_asked_for(tmp_path: Path) -> None:
    """`rlcsc benchmark read --batch 3`, on a patch set cut from a small synthetic image."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8)).save(tmp_path / "0.png")
    augment([tmp_path / "0.png"], tmp_path / "aug", AugmentParams(flips=("none",), factors=(1.0,)), jobs=1)
    make_patches(tmp_path / "aug", tmp_path / "patches", PatchParams(chunk=1), jobs=1)
    out = tmp_path / "read.json"
    argv = ["benchmark", "read", "--patches", str(tmp_path / "patches"), "--batch", "3", "--steps", "5"]
    assert main(argv + ["--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["pairs"], result["batch"], result["steps"]) == (len(PatchSet.open(tmp_path / "patches")), 3, 5)
    assert 0 <= result["median_ms"] <= result["p95_ms"]


def test_benchmark_winograd_times_each_width_directly_and_by_winograd(tmp_path: Path, monkeypatch) -> None:
    from rlcsc import benchmark, winograd

    result = benchmark.winograd_layers(repeats=2, size=24, widths=((4, 8), (96, 96)))
    layers = result["layers"]
    assert [(x["in"], x["out"], x["by_winograd"]) for x in layers] == [(4, 8, False), (96, 96, True)]
    assert all(x["direct_ms"] > 0 and x["winograd_ms"] > 0 for x in layers)
    assert all(x["speed_vs_direct"] == pytest.approx(x["direct_ms"] / x["winograd_ms"]) for x in layers)
    assert (result["tile"], result["rounds"], result["wide"]) == (24, 2, winograd.WIDE) and result["machine"]["commit"]
    rounds = []
    monkeypatch.setattr(benchmark, "winograd_layers", lambda repeats: rounds.append(repeats) or {"what": "winograd"})
    out = tmp_path / "winograd.json"
    assert main(["benchmark", "winograd", "--steps", "3", "--out", str(out)]) == 0 and rounds == [3]
    assert json.loads(out.read_text()) == {"what": "winograd"}
