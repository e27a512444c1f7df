"""One way to spread independent work over processes: an ordered map with a progress bar."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def pmap(fn: Callable[[T], R], tasks: Sequence[T], jobs: int | None, desc: str, unit: str = "img") -> Iterator[R]:
    """Yield `fn(task)` for each task, in order, computed on `jobs` processes (default: all cores)."""
    jobs = jobs or os.cpu_count() or 1
    with tqdm(total=len(tasks), desc=desc, unit=unit) as bar:
        if jobs == 1:
            for task in tasks:
                yield fn(task)
                bar.update()
            return
        with ProcessPoolExecutor(jobs) as pool:
            for result in pool.map(fn, tasks, chunksize=max(1, min(8, len(tasks) // (8 * jobs)))):
                yield result
                bar.update()
