"""`rlcsc benchmark`: timings that the project's speed targets are checked against."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from rlcsc.data.patches import PatchSet


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
