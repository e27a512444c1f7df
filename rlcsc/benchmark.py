"""`rlcsc benchmark`: timings that the project's speed targets are checked against."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from rlcsc.data.download import load_manifest
from rlcsc.data.patches import PatchSet
from rlcsc.evaluate import ilr_pair, score
from rlcsc.inference import apply, load_model


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
