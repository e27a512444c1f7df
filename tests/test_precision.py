"""Inference precisions: the in-place fp32 forward, bf16 against fp32, the fallback where bf16 is not native,
`rlcsc sr --precision`, `evaluate.precision` and `rlcsc benchmark inference`, on tiny networks and images."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from rlcsc import benchmark, device, int8, sr, winograd
from rlcsc.atomic import save_torch
from rlcsc.cli import main
from rlcsc.evaluate import EvaluateParams
from rlcsc.inference import Network, apply, build, computes_in, for_inference, load_model, model_state
from rlcsc.models.rlcsc import RLCSC, RLCSCConfig
from rlcsc.train import Monitor

pytestmark = pytest.mark.usefixtures("winograd_everywhere")
REPO = Path(__file__).resolve().parents[1]

NETWORKS = [("rlcsc", {"recursions": 3, "features": 8, "codes": 16}), ("vdsr", {"layers": 5, "features": 8}),
            ("drrn", {"units": 2, "features": 8})]
PHOTO = skdata.camera()[200:264, 200:264] / 255.0  # a 64x64 crop: edges and flat areas


def small_residual(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with its last layer scaled so that its residual on `PHOTO` reaches 0.05, as a trained network's
    on a photo does (an untrained one's is far larger)."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        r = np.abs(apply(model.eval(), PHOTO) - PHOTO).max()
        for t in last.parameters():
            t.mul_(0.05 / r)
    return model


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch):
    """Make the CPU look as if it had (True) or lacked (False) native bf16: torch's own CPU checks answer."""
    def set_native(answer: bool) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: answer)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: answer)
        device._say_once.cache_clear()
    return set_native


@pytest.mark.parametrize("arch,config", NETWORKS)
def test_bf16_is_fp32_up_to_rounding_its_inner_layers(arch: str, config: dict) -> None:
    """bf16 rounds only the layers between the image's first and last: on a network whose residual reaches
    0.05 it stays within a quarter of a grey level of fp32; rounding the image itself (what casting the
    whole network does) goes past that."""
    torch.manual_seed(0)
    model = small_residual(build(arch, config))
    exact = apply(for_inference(copy.deepcopy(model), "cpu"), PHOTO)
    fast = for_inference(copy.deepcopy(model), "cpu", "bf16")
    inner = {id(m) for m in fast.inner_layers()}
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.weight.dtype for m in convs] == [torch.bfloat16 if id(m) in inner else torch.float32 for m in convs]
    assert convs[0].weight.dtype == convs[-1].weight.dtype == torch.float32 and inner
    tolerance = 0.25 / 255
    error = np.abs(apply(fast, PHOTO) - exact).max()
    assert 0 < error < tolerance, error
    rounded_image = torch.from_numpy(PHOTO).bfloat16().double()
    assert np.abs(apply(fast, rounded_image) - exact).max() > tolerance


def test_bf16_falls_back_to_winograd_on_a_cpu_where_it_is_not_native_and_says_so_once(native, capsys) -> None:
    native(False)
    asked = ("bf16", "bf16", "winograd", "tf32", "fp32")
    assert [device.inference_precision("cpu", m) for m in asked] == ["winograd"] * 3 + ["fp32"] * 2
    assert capsys.readouterr().err == ("rlcsc: bf16 asked for, but this CPU has no AVX-512 BF16 or AMX, where bf16 "
                                       "runs slower than fp32: computing in winograd (fp32 by Winograd's F(6x6, 3x3) "
                                       "in the layers wide enough for it)\n")
    native(True)
    assert [device.inference_precision("cpu", m) for m in asked[1:]] == ["bf16", "winograd", "fp32", "fp32"]
    assert capsys.readouterr().err == ""
    with pytest.raises(device.RlcscError, match="precision must be one of bf16, winograd, tf32, fp32, got 'int4'"):
        device.inference_precision("cpu", "int4")


def test_a_gpu_runs_winograd_as_fp32_and_says_so_once(capsys) -> None:
    """cuDNN picks its own convolution algorithms (Winograd's among them) on a GPU."""
    assert [device.inference_precision("cuda", "winograd") for _ in range(2)] == ["fp32"] * 2
    assert capsys.readouterr().err == ("rlcsc: winograd is for the CPU; on a GPU cuDNN picks its own convolution "
                                       "algorithms: computing in fp32\n")


def test_evaluate_precision_allows_exactly_the_inference_precisions() -> None:
    """`evaluate.precision` spells its choices out, since rlcsc/evaluate.py imports no torch: the same as
    `device.INFERENCE_PRECISIONS`, which `inference_precision` accepts."""
    rule = next(f.metadata["rule"] for f in dataclasses.fields(EvaluateParams) if f.name == "precision")
    assert [m for m in device.INFERENCE_PRECISIONS if rule.test(m)] == list(device.INFERENCE_PRECISIONS)
    assert sorted(rule.text.removeprefix("one of ").split(", ")) == sorted(device.INFERENCE_PRECISIONS)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    save_torch(model_state(small_residual(RLCSC(RLCSCConfig(recursions=1, features=4, codes=8)))), tmp_path / "m.pt")
    Image.fromarray(skdata.astronaut()[100:124, 200:230]).save(tmp_path / "in.png")
    return tmp_path / "m.pt"


def test_sr_precision(tiny: Path, tmp_path: Path, native, capsys) -> None:
    """--precision fp32 is the network as it always ran; bf16 (the default) differs from it by rounding where
    native and is winograd where not, saying so; winograd is fp32 up to its rounding; anything else is one
    line, and nothing is written."""
    def sr(out: str, *precision: str) -> tuple[int, list[str]]:
        """Exit status and the lines said on stderr (the progress bar left out)."""
        status = main(["sr", str(tmp_path / "in.png"), "--scale", "3", "--model", str(tiny), "-o",
                       str(tmp_path / out), *precision])
        said = capsys.readouterr().err.replace("\r", "\n").splitlines()
        return status, [line for line in said if line.strip() and not line.startswith("network:")]

    native(False)
    status, said = sr("fp32.png", "--precision", "fp32")
    assert status == 0 and len(said) == 1 and said[0].endswith(") in fp32")
    status, said = sr("fallback.png")
    assert status == 0 and said[0] == ("rlcsc: bf16 asked for, but this CPU has no AVX-512 BF16 or AMX, where "
                                       "bf16 runs slower than fp32: computing in winograd (fp32 by Winograd's "
                                       "F(6x6, 3x3) in the layers wide enough for it)")
    assert len(said) == 2 and said[1].endswith(") in winograd")
    status, said = sr("winograd.png", "--precision", "winograd")
    assert status == 0 and len(said) == 1 and said[0].endswith(") in winograd")
    exact = np.asarray(Image.open(tmp_path / "fp32.png"))
    winograd = np.asarray(Image.open(tmp_path / "winograd.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "fallback.png")), winograd)
    assert np.abs(winograd.astype(int) - exact).max() <= 1
    native(True)
    status, said = sr("bf16.png", "--precision", "bf16")
    assert status == 0 and len(said) == 1 and said[0].endswith(") in bf16")
    fast = np.asarray(Image.open(tmp_path / "bf16.png")).astype(int)
    assert 0 < np.abs(fast - exact).max() <= 2
    for bad in ("fp16", "tf32", "int8"):
        status, said = sr(f"{bad}.png", "--precision", bad)
        assert status == 1 and said == [f"rlcsc sr: error: --precision must be one of bf16, winograd, fp32, got "
                                        f"'{bad}'"]
        assert not (tmp_path / f"{bad}.png").exists()


def test_sr_runs_vdsr_by_default_in_winograd_which_is_its_fp32(tmp_path: Path, native, capsys,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --precision, a network other than RL-CSC runs in winograd, even where bf16 is native, and VDSR,
    none of whose layers is wide enough for it, gives fp32's output and says fp32; RL-CSC's default is bf16."""
    monkeypatch.setattr(winograd, "WIDE", 96 * 96)
    torch.manual_seed(0)
    vdsr = small_residual(build("vdsr", {"layers": 5, "features": 8}))
    save_torch(model_state(vdsr), tmp_path / "vdsr.pt")
    Image.fromarray(skdata.astronaut()[100:124, 200:230]).save(tmp_path / "in.png")
    native(True)
    for out, precision in (("default.png", []), ("fp32.png", ["--precision", "fp32"])):
        assert main(["sr", str(tmp_path / "in.png"), "--scale", "3", "--model", str(tmp_path / "vdsr.pt"), "-o",
                     str(tmp_path / out), *precision]) == 0
        said = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.strip()]
        assert said[-1].endswith(") in fp32") and not any("bf16" in line for line in said)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "default.png")),
                                  np.asarray(Image.open(tmp_path / "fp32.png")))
    assert sr.default_precision(vdsr) == "winograd" and sr.default_precision(build(*NETWORKS[0])) == "bf16"


@pytest.mark.parametrize("run", sorted(p.parent.name for p in REPO.glob("runs/*/inference_cpu.json")))
def test_the_default_precision_is_bf16_for_the_networks_it_was_measured_near_fp32_on(run: str) -> None:
    """Each recorded inference benchmark bears out `rlcsc sr`'s default for its network: bf16 where bf16 moved
    Set5 x3 by at most `NEAR_FP32_DB` from fp32, winograd (fp32's arithmetic) where it moved it further."""
    bench = json.loads((REPO / "runs" / run / "inference_cpu.json").read_text())
    moved = abs(bench["variants"]["bf16"]["quality"]["Set5"]["psnr_change_db"])
    assert bench["scale"] == 3
    default = sr.default_precision(build(bench["arch"], bench["config"]))
    assert default == ("bf16" if moved <= sr.NEAR_FP32_DB else "winograd"), f"{run}: bf16 moved {moved} dB"


def test_a_network_too_narrow_for_winograd_is_said_to_compute_in_fp32(tiny: Path, tmp_path: Path, capsys,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no inner layer is wide enough for winograd (VDSR's), winograd computes exactly as fp32, and what
    says which precision computed says fp32."""
    network = load_model(tiny)
    assert computes_in(network, "winograd") == "winograd"  # every layer by winograd (the module's fixture)
    monkeypatch.setattr(winograd, "WIDE", 96 * 96)  # the package's width: the tiny network's layers stay direct
    assert [computes_in(network, m) for m in ("winograd", "bf16", "fp32")] == ["fp32", "bf16", "fp32"]
    assert Network(tiny, "cpu", "winograd").precision == "fp32"
    assert main(["sr", str(tmp_path / "in.png"), "--scale", "3", "--model", str(tiny), "-o", str(tmp_path / "o.png"),
                 "--precision", "winograd"]) == 0
    assert capsys.readouterr().err.rstrip().endswith(") in fp32")


def test_evaluate_precision_is_recorded_as_computed(tiny: Path, tmp_path: Path, mirror: Path, native) -> None:
    psnr = {}
    for asked, answer, computed in (("bf16", True, "bf16"), ("bf16", False, "winograd"), ("fp32", True, "fp32")):
        native(answer)
        params, out = tmp_path / f"{computed}.yaml", tmp_path / f"o-{computed}"
        params.write_text(f"evaluate: {{precision: {asked}, ifc: false}}\n")
        argv = ["evaluate", "--model", str(tiny), "--params", str(params), "--raw", str(mirror), "--out", str(out),
                "--datasets", "Set5", "--scales", "3", "--jobs", "1"]
        assert main(argv) == 0
        record = json.loads((out / "evaluation.json").read_text())
        assert record["precision"] == asked and record["computed_in"] == computed
        psnr[computed] = json.loads((out / "metrics.json").read_text())["Set5"]["x3"]["psnr"]
    assert psnr["fp32"] != psnr["bf16"] and abs(psnr["fp32"] - psnr["bf16"]) < 0.01
    assert abs(psnr["fp32"] - psnr["winograd"]) < 1e-4
    assert Network(tiny, "cpu", "tf32").precision == "fp32"  # the default evaluate.precision, on the CPU


def test_the_training_monitor_scores_in_bf16_and_winograd_on_a_copy(tiny: Path, mirror: Path, native) -> None:
    native(True)
    model = build("rlcsc", {"recursions": 1, "features": 4, "codes": 8})
    model.load_state_dict(load_model(tiny).state_dict())
    before = copy.deepcopy(model.state_dict())
    exact, fast = Monitor(mirror, "Set5", 3, "fp32")(model), Monitor(mirror, "Set5", 3, "bf16")(model)
    assert exact["psnr"] != fast["psnr"] and abs(exact["psnr"] - fast["psnr"]) < 0.01
    assert abs(Monitor(mirror, "Set5", 3, "winograd")(model)["psnr"] - exact["psnr"]) < 1e-4
    assert all(torch.equal(before[k], v) and v.dtype == torch.float32 for k, v in model.state_dict().items())
    assert all(type(m) is torch.nn.Conv2d for m in model.inner_layers())
    assert Network(tiny, "cpu", "bf16").precision == "bf16"


def test_benchmark_inference_alternates_the_native_variants(tiny: Path, tmp_path: Path, mirror: Path, native,
                                                            monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    native(True)
    entered, timed = [], []  # the precisions set around a forward pass, and those of the passes timed
    real_inferring, real_timer = benchmark.inferring, benchmark._timer

    def inferring(where: torch.device, precision: str):
        entered.append(precision)
        return real_inferring(where, precision)

    def timer(where: torch.device):
        run = real_timer(where)
        return lambda step: (timed.append(entered[-1]), run(step))[1]

    monkeypatch.setattr(benchmark, "inferring", inferring)
    monkeypatch.setattr(benchmark, "_timer", timer)
    out = tmp_path / "inference.json"
    argv = ["benchmark", "inference", "--raw", str(mirror), "--steps", "1", "--out", str(out)]
    assert main(argv + ["--model", str(tiny), "--datasets", "Set5", "Set14"]) == 0
    result = json.loads(out.read_text())
    assert timed == list(result["variants"]) * 2  # one after another in each round: the untimed first, the timed
    fp32, bf16 = result["variants"]["fp32"], result["variants"]["bf16"]
    quantized = {"int8"} if int8.available() else set()
    assert set(result["variants"]) == {"fp32", "bf16", "winograd"} | quantized
    assert result["not_native"] == {"tf32": "runs as fp32 on this cpu", **({} if quantized else {"int8": ANY})}
    assert result["not_asked"] == []
    # 9 (1*4 + 4*4 + 4*8 + 1*8*8 + 8*4 + 4*1) multiply-adds per pixel, 2 flops each, on a 288x288 tile
    assert result["gflop_per_tile"] == pytest.approx(2 * 9 * 152 * 288 * 288 / 1e9)
    assert fp32["speed_vs_fp32"] == 1 and set(fp32["quality"]) == {"Set5", "Set14"}
    assert all(q["psnr_change_db"] == q["largest_image_change_db"] == q["max_grey_difference"] == 0
               and q["share_over_1_grey"] == 0 for q in fp32["quality"].values())
    assert bf16["gflops"] == pytest.approx(result["gflop_per_tile"] / bf16["ms_per_tile"] * 1000)
    assert bf16["speed_vs_fp32"] == pytest.approx(fp32["ms_per_tile"] / bf16["ms_per_tile"])
    for name in {"bf16"} | quantized:
        for q in result["variants"][name]["quality"].values():
            assert 0 < abs(q["psnr_change_db"]) <= abs(q["largest_image_change_db"]) < 0.05
            assert 1 <= q["max_grey_difference"] <= 3 and 0 <= q["share_over_1_grey"] < 0.05
    for q in result["variants"]["winograd"]["quality"].values():
        assert abs(q["psnr_change_db"]) <= abs(q["largest_image_change_db"]) < 1e-4
        assert q["max_grey_difference"] <= 1 and q["share_over_1_grey"] == 0
    machine = result["machine"]
    assert machine["cpu"] == device.cpu_description() and machine["threads"] == torch.get_num_threads()
    assert machine["gpu"] is None and machine["cpu_cores"] == os.cpu_count() and machine["commit"] and machine["date"]
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and machine["isa_limits"] == {}
    assert ("onnxruntime" in machine) == bool(quantized)
    if quantized:
        assert result["int8_calibration"] == {"pairs": 256, "size": 33, "scales": [2, 3, 4], "percentile": 99.999,
                                              "training_sets": ["T91", "BSD200"]}
    native(False)  # and an untrained network of --experiment
    params = tmp_path / "params.yaml"
    params.write_text("train: {recursions: 2, features: 4, codes: 8, device: cpu}\nexperiments: {tiny: {}}\n")
    out.unlink()  # an existing --out is refused
    assert main(argv + ["--params", str(params), "--experiment", "tiny"]) == 0
    result = json.loads(out.read_text())
    assert set(result["variants"]) == {"fp32", "winograd"} | quantized
    assert result["not_native"]["bf16"] == "runs as winograd on this cpu" and result["model"].startswith("untrained")
    assert np.isfinite(result["variants"]["fp32"]["quality"]["Set5"]["psnr"])
    out.unlink()  # only the precisions asked for, and the ISA limits of the environment recorded
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert main(argv + ["--model", str(tiny), "--precisions", "winograd"]) == 0
    result = json.loads(out.read_text())
    assert set(result["variants"]) == {"fp32", "winograd"} and result["not_native"] == {}
    assert result["not_asked"] == ["bf16", "tf32", "int8"] and "int8_calibration" not in result
    assert result["machine"]["isa_limits"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"} and "onnxruntime" not in result["machine"]
    out.unlink()  # a network too narrow for winograd computes it as fp32, which is measured already
    monkeypatch.setattr(winograd, "WIDE", 96 * 96)
    assert main(argv + ["--model", str(tiny), "--precisions", "winograd"]) == 0
    result = json.loads(out.read_text())
    assert set(result["variants"]) == {"fp32"}
    assert result["not_native"] == {"winograd": "runs as fp32 for this network, whose layers are too narrow for it"}
    out.unlink()
    assert main(argv + ["--model", str(tiny), "--precisions", "winograd", "fp16"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "rlcsc benchmark: error: precisions must be among bf16, winograd, tf32, fp32, int8, got fp16")
    assert not out.exists()


def test_inference_in_bf16_keeps_its_fp32_layers_exact_on_a_gpu() -> None:
    """Under bf16, F0, F1 and H compute in fp32, and so without TF32 on a GPU as on the CPU: the switches that
    evaluation, `rlcsc sr`, the benchmarks and the training monitor set around a forward pass."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    for precision, tf32 in (("tf32", True), ("bf16", False), ("fp32", False)):
        with device.inferring("cuda", precision):
            assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (tf32, tf32)
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_each_forward_pass_of_inference_sets_the_switches_of_its_own_precision(
        tiny: Path, tmp_path: Path, mirror: Path, native, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rlcsc sr`, the evaluation's `Network` and the training monitor each run their forward passes inside
    `device.inferring` of the precision they compute in (so, under bf16, without TF32 on a GPU)."""
    import rlcsc.inference
    import rlcsc.train

    native(True)
    seen = []

    def recording(where: torch.device | str, precision: str):
        seen.append(precision)
        return device.inferring(where, precision)

    for module in (sr, rlcsc.inference, rlcsc.train):
        monkeypatch.setattr(module, "inferring", recording)
    for precision in ("bf16", "fp32"):
        seen.clear()
        list(sr.super_resolve_files([tmp_path / "in.png"], tmp_path / f"{precision}.png", 2, str(tiny), False,
                                    precision=precision))
        Network(tiny, "cpu", precision)(np.zeros((12, 12)), 2)
        Monitor(mirror, "Set5", 2, precision)(load_model(tiny))
        assert seen == [precision] * 3


def test_the_cpu_asked_for_is_the_cpu_even_beside_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cpu` is the CPU whatever else is present; `auto` and `cuda` take the GPU where there is one."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device.pick_device("cpu") == torch.device("cpu")
    assert device.pick_device("auto") == device.pick_device("cuda") == torch.device("cuda")


def test_training_precision_is_fp32_off_the_gpu_and_tf32_on_for_bf16_training(native) -> None:
    """`effective`: the training precision asked for on CUDA, fp32 elsewhere; `using_precision` turns TF32 on for
    bf16 training as for tf32 (autocast leaves the fp32 operations to TF32 units), off for fp32 alone."""
    assert [device.effective("cpu", m) for m in device.PRECISIONS] == ["fp32"] * 3
    assert [device.effective("cuda", m) for m in device.PRECISIONS] == list(device.PRECISIONS)
    for mode, tf32 in (("bf16", True), ("tf32", True), ("fp32", False)):
        with device.using_precision("cuda", mode):  # the switches exist without a GPU
            assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (tf32, tf32), mode


@pytest.mark.parametrize("avx512_bf16,amx", [(True, False), (False, True), (True, True), (False, False)])
def test_either_avx512_bf16_or_amx_makes_bf16_native(avx512_bf16: bool, amx: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert device.native_bf16("cpu") == (avx512_bf16 or amx)


@pytest.mark.parametrize("limit,expected", [("AVX2", False), ("avx512_core_vnni", False), ("AVX512_CORE_BF16", True),
                                          ("AVX512_CORE_AMX", True), ("ALL", True), ("", True)])
def test_a_limit_below_avx512_bf16_on_onednn_makes_bf16_emulated(limit: str, expected: bool,
                                                                 monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
    device._say_once.cache_clear()
    assert device.native_bf16("cpu") == expected
    assert device.inference_precision("cpu", "bf16") == ("bf16" if expected else "winograd")
    if not expected:
        assert capsys.readouterr().err.startswith(f"rlcsc: bf16 asked for, but ONEDNN_MAX_CPU_ISA={limit} keeps oneDNN "
                                                  "from AVX-512 BF16 and AMX, where bf16 runs slower than fp32")
