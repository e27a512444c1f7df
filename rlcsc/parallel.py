"""One way to spread independent work over processes: an ordered map with a progress bar."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def share_cores(jobs: int) -> None:
    """Limit a worker's thread pools (torch, OpenMP) to its share of the cores, so that `jobs`
    workers together use every core once instead of each using all of them."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch when it is first imported
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def pool(jobs: int) -> ProcessPoolExecutor:
    """A pool of `jobs` worker processes that share the cores (see `share_cores`)."""
    return ProcessPoolExecutor(jobs, initializer=share_cores, initargs=(jobs,))


def pmap(fn: Callable[[T], R], tasks: Sequence[T], jobs: int | None, desc: str, unit: str = "img") -> Iterator[R]:
    """Yield `fn(task)` for each task, in order, computed on `jobs` processes (default: all cores)."""
    jobs = jobs or os.cpu_count() or 1
    with tqdm(total=len(tasks), desc=desc, unit=unit) as bar:
        if jobs == 1:
            for task in tasks:
                yield fn(task)
                bar.update()
            return
        with pool(jobs) as workers:
            for result in workers.map(fn, tasks, chunksize=max(1, min(8, len(tasks) // (8 * jobs)))):
                yield result
                bar.update()
