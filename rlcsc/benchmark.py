"""`rlcsc benchmark`: timings that the project's speed targets are checked against."""

from __future__ import annotations

import copy
import resource
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rlcsc import int8, winograd
from rlcsc.data.patches import PatchSet
from rlcsc.device import (
    INFERENCE_PRECISIONS,
    device_name,
    effective,
    inference_precision,
    inferring,
    machine,
    pick_device,
    using_precision,
)
from rlcsc.errors import RlcscError
from rlcsc.evaluate import EvaluateParams, evaluate, ilr_pairs, quantize, score, summarize
from rlcsc.inference import Network, apply, build, computes_in, describe_model, for_inference, load_model, model_state
from rlcsc.provenance import stamp
from rlcsc.train import Batches, TrainParams, prepare

PAPER_PAIRS = 1_929_728
BENCHMARK_PRECISIONS = (*INFERENCE_PRECISIONS, "int8")  # what `inference` can measure (int8: `rlcsc.int8`)


def read_batches(folder: Path, batch: int = 128, steps: int = 500, seed: int = 0) -> dict:
    """Time gathering random batches of training pairs from the memory-mapped patch set, as training does on the
    host (`rlcsc.train.Batches` on the CPU: a CUDA device with room for the pairs gathers them on the device).

    The first 20 batches warm the page cache and are not timed; the median and 95th percentile
    of the rest are reported in milliseconds.
    """
    patches = PatchSet.open(folder)
    batches = Batches(patches, len(patches), torch.device("cpu"))
    rng = np.random.default_rng(seed)
    times = []
    for step in range(steps + 20):
        positions = rng.integers(0, len(patches), batch)
        start = time.perf_counter()
        batches(positions)
        if step >= 20:
            times.append((time.perf_counter() - start) * 1000)
    return {
        "what": "random batch read",
        "pairs": len(patches),
        "batch": batch,
        "steps": steps,
        "median_ms": float(np.median(times)),
        "p95_ms": float(np.percentile(times, 95)),
    }


def input_precision(model_path: Path, raw: Path, dataset: str = "Set5", scale: int = 3) -> dict:
    """PSNR cost of storing training inputs as float16: the model's output on float32 inputs vs
    on the same inputs rounded to float16, scored by the evaluation protocol."""
    model = load_model(model_path)
    pairs = ilr_pairs(raw, dataset, scale)
    psnr = {}
    for name, dtype in (("float32", np.float32), ("float16", np.float16)):
        scores = [score(hr, apply(model, ilr.astype(dtype).astype(np.float64)), scale, False) for hr, ilr in pairs]
        psnr[name] = float(np.mean([s[0] for s in scores]))
    return {"what": "input precision", "model": str(model_path), "dataset": dataset, "scale": scale,
            "psnr_float32": psnr["float32"], "psnr_float16": psnr["float16"],
            "difference_db": psnr["float32"] - psnr["float16"]}


def forward_flops_per_pixel(p: TrainParams) -> float:
    """Floating-point operations (2 per multiply-add) of one forward pass of the network `p` trains, per
    output pixel (`network_flops_per_pixel`)."""
    return network_flops_per_pixel(p.arch, p.model_config())


def network_flops_per_pixel(arch: str, cfg: dict) -> float:
    """Floating-point operations (2 per multiply-add) of one forward pass, per output pixel.

    RL-CSC: 9 (c n + n n + n m + K m m + m n + n c) multiply-adds (W1 * y computed once);
    DRRN: 9 (c n + 2 U n n + n c); VDSR: 9 (c n + (D - 2) n n + n c).
    """
    c, n = cfg.get("channels", 1), cfg["features"]
    if arch == "drrn":
        macs = 9 * (c * n + 2 * cfg["units"] * n * n + n * c)
    elif arch == "vdsr":
        macs = 9 * (c * n + (cfg["layers"] - 2) * n * n + n * c)
    else:
        m, k = cfg["codes"], cfg["recursions"]
        macs = 9 * (c * n + n * n + n * m + k * m * m + m * n + n * c)
    return 2.0 * macs


def _timer(device: torch.device):
    """A function that runs `step` once and returns its duration in ms (device events on CUDA)."""
    def run(step) -> float:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        t = time.perf_counter()
        step()
        return (time.perf_counter() - t) * 1000
    return run


def _max_rss_mib() -> float:
    """The process's peak resident memory so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def train_step(p: TrainParams, steps: int = 30, warmup: int = 10, size: int = 33) -> dict:
    """Median time of the training step that `rlcsc train` runs (`rlcsc.train.prepare`: forward,
    loss, backward, clipping, update) for the network and recipe `p` describes, on random patches
    already on the device; with the analytic TFLOP/s, projected run times and the memory the steps took at their
    peak (on a GPU CUDA's peak of tensors; on a CPU how far the process's peak resident memory rose from before the
    network was built)."""
    device = pick_device(p.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    before = _max_rss_mib()  # on a CPU: the interpreter's and the imports', left out of the peak below
    _, _, step = prepare(p, device)
    x = torch.rand(p.batch, 1, size, size, device=device)
    y = (x + 0.01 * torch.randn_like(x)).clamp(0, 1)
    timer = _timer(device)
    with using_precision(device, p.precision):
        for _ in range(warmup):
            timer(lambda: step(x, y))
        times = [timer(lambda: step(x, y)) for _ in range(steps)]
    ms = statistics.median(times)
    flops = 3 * forward_flops_per_pixel(p) * p.batch * size * size  # backward costs about 2 forwards
    steps_per_epoch = (p.pairs or PAPER_PAIRS) // p.batch
    return {
        "what": "train step", "device": device_name(device),
        "arch": p.arch, "model": p.model_config(), "batch": p.batch, "patch": size,
        "precision": effective(device, p.precision), "compile": bool(p.compile and cuda),
        "ms_per_step": ms, "ms_min": min(times), "steps_timed": steps,
        "tflop_per_step": flops / 1e12, "tflops": flops / (ms / 1000) / 1e12,
        "steps_per_epoch": steps_per_epoch, "projected_epoch_min": steps_per_epoch * ms / 60000,
        "projected_run_h": p.last_step(steps_per_epoch) * ms / 3.6e6,
        "peak_memory_mib": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else _max_rss_mib() - before,
    }


@torch.no_grad()
def inference(p: TrainParams, raw: Path, model: Path | None = None, repeats: int = 5, size: int = 288,
              datasets: Sequence[str] = ("Set5",), scale: int = 3,
              precisions: Sequence[str] = BENCHMARK_PRECISIONS) -> dict:
    """fp32 and each of `precisions` (default: all) that the device runs natively (on a GPU tf32; bf16 where
    native; on a CPU winograd: `rlcsc.device.inference_precision`; on a CPU with ONNX Runtime, int8:
    `rlcsc.int8`) on the model file `model` or, without one, an untrained network of `p`: the median ms of
    a forward pass over a `size` x `size` tile (the paper: 0.15 s for 288 x 288), the variants alternated
    in each of `repeats` rounds so that a load on the machine falls on all of them alike; GFLOP/s, speed
    against fp32; and on each of `datasets` at x`scale`, by the evaluation protocol: the PSNR, its change
    against fp32 (of the mean, and the largest of one image), the largest difference of an output pixel
    from fp32's in grey levels and the share of pixels more than 1 grey level from it."""
    unknown = [m for m in precisions if m not in BENCHMARK_PRECISIONS]
    if unknown:
        raise RlcscError(f"precisions must be among {', '.join(BENCHMARK_PRECISIONS)}, got {', '.join(unknown)}")
    device = pick_device(p.device)
    pairs = {d: ilr_pairs(raw, d, scale) for d in datasets}
    if model is not None:
        about = describe_model(model)
        base, label, arch, config = load_model(model, device), str(model), about["arch"], about["config"]
    else:
        arch, config = p.arch, p.model_config()
        base, label = for_inference(build(arch, config), device), f"untrained {config}"
    asked = {"fp32", *precisions}  # fp32: the baseline of every ratio
    fp32_first = sorted(INFERENCE_PRECISIONS, key=lambda m: m != "fp32")
    on_device = {m: inference_precision(device, m) for m in INFERENCE_PRECISIONS if m in asked}
    missing = {m: f"runs as {computes_in(base, r)} " + (f"on this {device.type}" if r != m else
                                                        "for this network, whose layers are too narrow for it")
               for m, r in on_device.items() if computes_in(base, r) != m}
    modes = [m for m in fp32_first if m in on_device and m not in missing]
    nets = {m: for_inference(copy.deepcopy(base), device, m) for m in modes}
    x = torch.rand(1, 1, size, size, device=device)
    steps = {m: (lambda m=m: nets[m](x)) for m in modes}
    upscalers = {m: (lambda ilr, m=m: apply(nets[m], ilr)) for m in modes}
    calibration = None
    if "int8" in asked and device.type != "cpu":
        missing["int8"] = f"runs on a CPU only, not on this {device.type}"
    elif "int8" in asked and not int8.available():
        missing["int8"] = "needs ONNX Runtime: pip install 'rlcsc[int8]'"
    with_int8 = "int8" in asked and "int8" not in missing
    ran_on = _machine(device, with_int8)  # the commit as the measurement starts
    with tempfile.TemporaryDirectory(prefix="rlcsc-int8-") as tmp:
        if with_int8:
            calibration = int8.calibration_inputs(raw)
            int8.quantize(base, calibration, Path(tmp) / "int8.onnx")
            quantized, tile = int8.Int8Network(Path(tmp) / "int8.onnx"), x[0, 0].double().cpu().numpy()
            upscalers["int8"], steps["int8"] = (lambda ilr: quantized(ilr, scale)), (lambda: quantized(tile, scale))
            modes.append("int8")
        timer, times = _timer(device), {m: [] for m in modes}
        for i in tqdm(range(repeats + 1), desc="timing", unit="round"):  # round 0 untimed
            for m in modes:
                with inferring(device, m):  # int8 runs outside torch
                    ms = timer(steps[m])
                if i:
                    times[m].append(ms)
        outs = {}
        for m in modes:
            with inferring(device, m):  # int8 runs outside torch
                outs[m] = {d: [upscalers[m](ilr) for _, ilr in tqdm(pairs[d], desc=f"{d} x{scale} {m}", unit="img")]
                           for d in datasets}
    gflop = network_flops_per_pixel(arch, config) * size * size / 1e9
    ms = {m: statistics.median(times[m]) for m in modes}
    exact = {d: _psnr(pairs[d], outs["fp32"][d], scale) for d in datasets}
    variants = {m: {"ms_per_tile": ms[m], "gflops": gflop / (ms[m] / 1000), "speed_vs_fp32": ms["fp32"] / ms[m],
                    "quality": {d: _quality(pairs[d], outs[m][d], outs["fp32"][d], exact[d], scale) for d in datasets}}
                for m in modes}
    result = {"what": "inference", "device": device_name(device), "machine": ran_on,
              "model": label, "arch": arch, "config": config, "tile": size, "gflop_per_tile": gflop, "rounds": repeats,
              "scale": scale, "variants": variants, "not_native": missing,
              "not_asked": [m for m in BENCHMARK_PRECISIONS if m not in asked]}
    if calibration is not None:
        result["int8_calibration"] = {"pairs": len(calibration), "size": calibration.shape[-1], "scales": [2, 3, 4],
                                      "percentile": int8.PERCENTILE, "training_sets": list(int8.TRAINING_SETS)}
    return result


# The layers `winograd_layers` times: VDSR's (64), DRRN's and RL-CSC's with m = 128 (128), RL-CSC's W1 and S
# (128 to 256, 256), and widths between.
LAYER_WIDTHS = ((64, 64), (96, 96), (64, 256), (128, 128), (128, 256), (192, 192), (256, 256))


@torch.no_grad()
def winograd_layers(repeats: int = 8, size: int = 288,
                    widths: Sequence[tuple[int, int]] = LAYER_WIDTHS) -> dict:
    """One 3x3 convolution of each of `widths` (input, output channels) on a CPU, on a `size` x `size` map
    followed by a ReLU, as the networks compute it in fp32 (channels-last) and by `WinogradConv`, alternated
    in each of `repeats` rounds: the median ms of each, the speed of winograd against direct, and whether
    `winograd_inside` computes a layer of that width by winograd (`rlcsc.winograd.by_winograd`)."""
    ran_on = {**machine("cpu"), **stamp()}
    layers = []
    for cin, cout in tqdm(widths, desc="layers", unit="layer"):
        conv = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False).eval()
        fast = winograd.WinogradConv(conv)
        conv = conv.to(memory_format=torch.channels_last)
        x = torch.randn(1, cin, size, size).contiguous(memory_format=torch.channels_last)
        steps = {"direct": lambda: torch.relu(conv(x)), "winograd": lambda: torch.relu(fast(x))}
        timer, times = _timer(torch.device("cpu")), {k: [] for k in steps}
        for i in range(repeats + 1):  # round 0 untimed
            for k, step in steps.items():
                took = timer(step)
                if i:
                    times[k].append(took)
        ms = {k: statistics.median(v) for k, v in times.items()}
        layers.append({"in": cin, "out": cout, "direct_ms": ms["direct"], "winograd_ms": ms["winograd"],
                       "speed_vs_direct": ms["direct"] / ms["winograd"], "by_winograd": winograd.by_winograd(conv)})
    return {"what": "winograd", "machine": ran_on, "tile": size, "rounds": repeats, "wide": winograd.WIDE,
            "layers": layers}


def _machine(device: torch.device, with_int8: bool) -> dict:
    """What an inference measurement ran on and with (`device.machine`), ONNX Runtime's version when int8
    ran, the code's commit and the date."""
    runtime = {"onnxruntime": int8.version()} if with_int8 else {}
    return {**machine(device), **runtime, **stamp()}


def _psnr(pairs: list[tuple[np.ndarray, np.ndarray]], outs: list[np.ndarray], scale: int) -> np.ndarray:
    """The PSNR of each output in `outs` of the images `pairs`, by the protocol."""
    return np.array([score(hr, out, scale, False)[0] for (hr, _), out in zip(pairs, outs)])


def _quality(pairs: list[tuple[np.ndarray, np.ndarray]], outs: list[np.ndarray], exact: list[np.ndarray],
             psnr_exact: np.ndarray, scale: int) -> dict:
    """A variant's outputs `outs` of the images `pairs` against fp32's `exact` (of PSNR `psnr_exact`)."""
    psnr = _psnr(pairs, outs, scale)
    grey = [np.abs(quantize(a, scale).astype(int) - quantize(b, scale)) for a, b in zip(outs, exact)]
    change = psnr - psnr_exact
    return {"psnr": float(psnr.mean()), "psnr_change_db": float(change.mean()),
            "largest_image_change_db": float(change[np.abs(change).argmax()]),
            "max_grey_difference": max(int(g.max()) for g in grey),
            "share_over_1_grey": float(sum(int((g > 1).sum()) for g in grey) / sum(g.size for g in grey))}


def evaluation(p: TrainParams, e: EvaluateParams, raw: Path, model: Path | None = None,
               jobs: int | None = None) -> dict:
    """Wall time of `rlcsc evaluate` on the test sets, scales and metrics of `e`, for the model file
    `model` or, without one, an untrained network of `p` (the time does not depend on the weights).

    With TF32 on a GPU it also scores Set5 and Set14 (when in `e`) in fp32 without IFC and reports
    the PSNR differences, so the speed's cost in accuracy is printed beside it.
    """
    device = pick_device(p.device).type
    if model is not None and not model.is_file():
        raise RlcscError(f"model file not found: {model}")
    label = str(model) if model is not None else f"untrained {p.model_config()}"
    with tempfile.TemporaryDirectory() as tmp:
        if model is None:
            model = Path(tmp) / "untrained.pt"
            torch.save(model_state(build(p.arch, p.model_config())), model)
        network = Network(model, device, e.precision)
        start = time.perf_counter()
        scores = evaluate(network, raw, e.datasets, e.scales, e.ifc, jobs)
        seconds = time.perf_counter() - start
        result = {"what": "evaluation", "device": device_name(device),
                  "model": label,
                  "datasets": list(e.datasets), "scales": list(e.scales), "ifc": e.ifc,
                  "precision": network.precision, "images": len(scores),
                  "seconds": seconds, "images_per_s": len(scores) / seconds}
        small = [d for d in ("Set5", "Set14") if d in e.datasets]
        if device == "cuda" and e.precision == "tf32" and small:
            fast = summarize([s for s in scores if s.dataset in small])
            exact = summarize(evaluate(Network(model, device, "fp32"), raw, small, e.scales, False, jobs))
            result["psnr_tf32_minus_fp32"] = {d: {x: fast[d][x]["psnr"] - exact[d][x]["psnr"] for x in exact[d]}
                                              for d in exact}
    return result
