"""One way to spread independent work over processes: an ordered map with a progress bar."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
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


def _end_with_parent() -> None:
    """End this process as soon as its parent has ended (checked twice a second), so that a killed
    command leaves no worker computing for nobody; SIGTERM ends it at once, without a traceback."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:  # a process whose parent ends is handed to another
            time.sleep(0.5)
        os._exit(1)

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=watch, daemon=True).start()


def _start_worker(jobs: int) -> None:
    _end_with_parent()
    share_cores(jobs)


def pool(jobs: int) -> ProcessPoolExecutor:
    """A pool of `jobs` worker processes that share the cores (see `share_cores`) and end with their
    parent (`_end_with_parent`)."""
    return ProcessPoolExecutor(jobs, initializer=_start_worker, initargs=(jobs,))


def pmap(fn: Callable[[T], R], tasks: Sequence[T], jobs: int | None, desc: str, unit: str = "img") -> Iterator[R]:
    """Yield `fn(task)` for each task, in order, computed on `jobs` processes (default: all cores)."""
    jobs = jobs or os.cpu_count() or 1
    with tqdm(total=len(tasks), desc=desc, unit=unit) as bar:
        if jobs == 1:
            for task in tasks:
                yield fn(task)
                bar.update()
            return
        workers = pool(jobs)
        try:
            for result in workers.map(fn, tasks, chunksize=max(1, min(8, len(tasks) // (8 * jobs)))):
                yield result
                bar.update()
        except BaseException:  # an error or an interruption: the workers' tasks are dropped, not waited for
            for worker in multiprocessing.active_children():
                worker.terminate()
            raise
        finally:
            workers.shutdown(cancel_futures=True)
