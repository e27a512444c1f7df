"""`rlcsc benchmark`: timings that the project's speed targets are checked against."""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rlcsc.data.download import load_manifest
from rlcsc.data.patches import PatchSet
from rlcsc.evaluate import ilr_pair, score
from rlcsc.inference import apply, build, load_model
from rlcsc.train import TrainParams, pick_device

PAPER_PAIRS = 1_929_728


def read_batches(folder: Path, batch: int = 128, steps: int = 500, seed: int = 0) -> dict:
    """Time gathering random batches of training pairs from the memory-mapped patch set.

    The first 20 batches warm the page cache and are not timed; the median and 95th percentile
    of the rest are reported in milliseconds.
    """
    patches = PatchSet.open(folder)
    rng = np.random.default_rng(seed)
    times = []
    for step in range(steps + 20):
        positions = rng.integers(0, len(patches), batch)
        start = time.perf_counter()
        patches.batch(positions)
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
    pairs = [ilr_pair(raw / e.dataset / e.file, scale) for e in load_manifest(datasets=[dataset])]
    psnr = {}
    for name, dtype in (("float32", np.float32), ("float16", np.float16)):
        scores = [score(hr, apply(model, ilr.astype(dtype).astype(np.float64)), scale, False) for hr, ilr in pairs]
        psnr[name] = float(np.mean([s[0] for s in scores]))
    return {"what": "input precision", "model": str(model_path), "dataset": dataset, "scale": scale,
            "psnr_float32": psnr["float32"], "psnr_float16": psnr["float16"],
            "difference_db": psnr["float32"] - psnr["float16"]}


def forward_flops_per_pixel(p: TrainParams) -> float:
    """Floating-point operations (2 per multiply-add) of one forward pass, per output pixel.

    RL-CSC: 9 (c n + n n + n m + K m m + m n + n c) multiply-adds (W1 * y computed once);
    DRRN: 9 (c n + 2 U n n + n c).
    """
    cfg, c = p.model_config(), 1
    n = cfg["features"]
    if p.arch == "drrn":
        macs = 9 * (c * n + 2 * cfg["units"] * n * n + n * c)
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


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def train_step(p: TrainParams, steps: int = 30, warmup: int = 10, size: int = 33) -> dict:
    """Median time of one training step (forward, eq. 14 loss, backward, clipping, SGD) of the
    network `p` describes, on random patches already on the device, set up as `rlcsc train` sets it
    up (channels-last, autocast, compile); with the analytic TFLOP/s and projected run times."""
    device = pick_device(p.device)
    cuda = device.type == "cuda"
    model = build(p.arch, p.model_config()).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = p.precision != "fp32"
        torch.cuda.reset_peak_memory_stats(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay,
                                **({"fused": True} if cuda else {"foreach": True}))
    forward = torch.compile(model) if (p.compile and cuda) else model
    x = torch.rand(p.batch, 1, size, size, device=device)
    y = (x + 0.01 * torch.randn_like(x)).clamp(0, 1)
    if cuda:
        x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and p.precision == "bf16"):
            out = forward(x)
        loss = (out.float() - y).square().sum(dim=(1, 2, 3)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), p.clip, foreach=True)
        optimizer.step()

    timer = _timer(device)
    for _ in range(warmup):
        timer(step)
    times = [timer(step) for _ in range(steps)]
    ms = statistics.median(times)
    flops = 3 * forward_flops_per_pixel(p) * p.batch * size * size  # backward costs about 2 forwards
    steps_per_epoch = (p.pairs or PAPER_PAIRS) // p.batch
    return {
        "what": "train step", "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "arch": p.arch, "model": p.model_config(), "batch": p.batch, "patch": size,
        "precision": p.precision if cuda else "fp32", "compile": bool(p.compile and cuda),
        "ms_per_step": ms, "ms_min": min(times), "steps_timed": steps,
        "tflop_per_step": flops / 1e12, "tflops": flops / (ms / 1000) / 1e12,
        "steps_per_epoch": steps_per_epoch, "projected_epoch_min": steps_per_epoch * ms / 60000,
        "projected_run_h": p.epochs * steps_per_epoch * ms / 3.6e6, "peak_memory_mib": _peak_memory_mib(device),
    }


@torch.no_grad()
def inference(p: TrainParams, size: int = 288, repeats: int = 10) -> dict:
    """Median time to super-resolve one `size` x `size` image (the paper: 0.15 s for 288 x 288)."""
    device = pick_device(p.device)
    cuda = device.type == "cuda"
    model = build(p.arch, p.model_config()).to(device).eval()
    x = torch.rand(1, 1, size, size, device=device)
    timer = _timer(device)
    result = {"what": "inference", "device": torch.cuda.get_device_name(device) if cuda else "cpu",
              "model": p.model_config(), "size": size}
    for precision in (("fp32", "bf16") if cuda else ("fp32",)):
        def step() -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
                model(x)
        for _ in range(3):
            timer(step)
        result[f"ms_{precision}"] = statistics.median(timer(step) for _ in range(repeats))
    return result
