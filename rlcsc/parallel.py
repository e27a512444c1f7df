"""One way to spread independent work over processes: an ordered map with a progress bar (and, for work
that is not a map, the pool it runs on).

An interrupted map (or `pool` block) ends its workers at once (its own only: a child process started
before it keeps running), and a killed one leaves none behind, however they were started (`_end_with`).
A worker killed while it writes a result into the pool's result pipe would leave part of a message
there, and the pool's manager thread would wait for the rest forever (and the process with it, at
exit). So each result travels as a file, and the pipe carries only the task's number: a message far
below the pipe's atomic write size (PIPE_BUF), which is there whole or not at all. The folder of those
files is locked while its map lives, and the next map removes one whose map was killed
(`_results_folder`). Workers, and the map when it runs in the calling process, keep the memory they
free for reuse (`keep_freed_memory`).
"""

from __future__ import annotations

import ctypes
import fcntl
import multiprocessing
import os
import pickle
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

from threadpoolctl import threadpool_limits
from tqdm import tqdm

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (glibc's malloc.h)

T = TypeVar("T")
R = TypeVar("R")


def share_cores(jobs: int) -> None:
    """Limit a worker's thread pools (torch, OpenMP, numpy's BLAS) to its share of the cores, so that `jobs`
    workers together use every core once instead of each using all of them. A BLAS sizes its pool when it is
    loaded, in the parent, so OMP_NUM_THREADS comes too late for it: `threadpool_limits` resizes it (2 workers of 2
    BLAS threads each on 2 cores took nearly twice the CPU time for IFC's matrix products, to the same bits)."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch when it is first imported
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    threadpool_limits(threads)


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed memory for reuse (blocks up to 32 MiB from its heap, up to 64 MiB
    free at its top) instead of handing it back to the system, which maps it in again page by page, a
    page fault each: the image stages allocate and free megabytes for every variant of every image, and
    by default `rlcsc augment` spent as much time in those faults as in computing. Nothing changes where
    the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, 32 << 20)
    mallopt(M_TRIM_THRESHOLD, 64 << 20)


def _end_with(creator: int) -> None:
    """End this process as soon as process `creator`, which made its pool, has ended, so that a killed
    command leaves no worker computing for nobody; SIGTERM ends it at once, without a traceback.

    A worker started by a fork server is not its creator's child, and holds (as every worker of it does)
    the pipe by which the server would learn that the creator has ended: its creator is watched through
    a pidfd (Linux), readable once that process has ended. Without pidfds the workers are the creator's
    children (fork or spawn) and wait for their parent to change (checked twice a second)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        ended = os.pidfd_open(creator)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # no pidfds here
        if os.getppid() != creator:
            return  # neither way of watching it: the worker ends with its pool only
        ended = None

    def watch() -> None:
        if ended is None:
            while os.getppid() == creator:  # a process whose parent ends is handed to another
                time.sleep(0.5)
        else:  # poll, not select: a worker among hundreds may hold a descriptor above select's 1024
            watched = select.poll()
            watched.register(ended, select.POLLIN)
            watched.poll()
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _start_worker(jobs: int, creator: int) -> None:
    _end_with(creator)
    keep_freed_memory()
    share_cores(jobs)


@contextmanager
def pool(jobs: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of `jobs` worker processes that share the cores (see `share_cores`), keep the memory they
    free (`keep_freed_memory`) and end with the process that made them (`_end_with`). An error or an
    interruption in the block ends them at once (its own only: a child process started before it keeps
    running): their tasks are dropped, not waited for."""
    others = set(multiprocessing.active_children())
    workers = ProcessPoolExecutor(jobs, initializer=_start_worker, initargs=(jobs, os.getpid()))
    try:
        yield workers
    except BaseException:
        for worker in set(multiprocessing.active_children()) - others:
            worker.terminate()
        raise
    finally:
        workers.shutdown(cancel_futures=True)


FOLDER, MAKING = "rlcsc-results-", "rlcsc-making-"  # the prefixes of a results folder, and of one being made


@contextmanager
def _results_folder() -> Iterator[str]:
    """A new folder in the system's temporary folder for the workers' results, removed at the end. It is
    locked (`flock`) while it lives: the system releases the lock when its holders end, however they end,
    so a folder that no one holds was left by a killed map, and this removes every such one first. It is
    made under another prefix and renamed once locked, so that no map takes it for a left one meanwhile."""
    for left in Path(tempfile.gettempdir()).glob(FOLDER + "*"):
        _remove_unheld(left)
    made = Path(tempfile.mkdtemp(prefix=MAKING))
    fd = os.open(made, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        folder = made.with_name(FOLDER + made.name.removeprefix(MAKING))
        made.rename(folder)
        try:
            yield str(folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        os.close(fd)


def _remove_unheld(folder: Path) -> None:
    """Remove `folder` if no live map holds its lock (nor is it another user's, or a link)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        shutil.rmtree(folder, ignore_errors=True)
    except BlockingIOError:
        pass  # its map is at work
    finally:
        os.close(fd)


def _to_file(fn: Callable[[T], R], folder: str, numbered: tuple[int, T]) -> int:
    """Worker: write `fn(task)` to `folder/<i>.pickle`; return the task's number `i`."""
    i, task = numbered
    with open(Path(folder) / f"{i}.pickle", "wb") as f:
        pickle.dump(fn(task), f, protocol=pickle.HIGHEST_PROTOCOL)
    return i


def _from_file(folder: str, i: int) -> object:
    """The result that `_to_file` wrote for task `i`, its file removed."""
    path = Path(folder) / f"{i}.pickle"
    with open(path, "rb") as f:
        result = pickle.load(f)
    path.unlink()
    return result


def pmap(fn: Callable[[T], R], tasks: Sequence[T], jobs: int | None, desc: str, unit: str = "img") -> Iterator[R]:
    """Yield `fn(task)` for each task, in order, computed on `jobs` processes (default: all cores; no more than
    there are tasks)."""
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks)))
    with tqdm(total=len(tasks), desc=desc, unit=unit) as bar:
        if jobs == 1:
            keep_freed_memory()
            for task in tasks:
                yield fn(task)
                bar.update()
            return
        with _results_folder() as folder, pool(jobs) as workers:
            chunk = max(1, min(8, len(tasks) // (8 * jobs)))
            for i in workers.map(partial(_to_file, fn, folder), enumerate(tasks), chunksize=chunk):
                yield _from_file(folder, i)
                bar.update()
