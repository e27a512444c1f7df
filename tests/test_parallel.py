"""The ordered process map: its results, in order, an interruption that ends it at once however large
the results are that the workers are handing back and leaves other child processes running, and memory
freed by the map kept for reuse."""

from __future__ import annotations

import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from rlcsc.parallel import pmap, pool

# Workers that hand back 64 MB each: most of their time goes into passing the result to the parent,
# where a worker ended mid-message once left the pool waiting forever.
LARGE = textwrap.dedent("""
    import signal, sys
    from rlcsc.parallel import pmap

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        for result in pmap(bytes, [64 << 20] * 400, 2, "large"):
            print(len(result), flush=True)
    except KeyboardInterrupt:
        sys.exit(130)
""")

# Two workers started by `argv[1]` (fork, spawn or a fork server) sleeping in a map: the first task ends
# at once, so that a line says they are at work, and the others take a minute.
SLEEPING = textwrap.dedent("""
    import multiprocessing, sys, time
    multiprocessing.set_start_method(sys.argv[1])
    from rlcsc.parallel import pmap

    for _ in pmap(time.sleep, [0] + [60] * 4, 2, "sleep"):
        print("at work", flush=True)
""")

# Three 8 MiB arrays made and freed, four times: the page faults of the last three rounds. By default
# glibc hands the freed memory back to the system and takes it again page by page.
FAULTS = textwrap.dedent("""
    import resource

    import numpy as np

    def faults() -> list[int]:
        counts = []
        for _ in range(4):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            live = [np.ones(8 << 20, np.uint8) for _ in range(3)]
            del live
            counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return counts[1:]
""")
RUN = {"plain": "print(max(faults()))",
       "kept": "keep_freed_memory(); print(max(faults()))",
       "worker": "with pool(1) as w: print(max(w.submit(faults).result()))"}


def ended(pids: list[int], within: float = 30) -> bool:
    """Whether every process of `pids` ends within `within` seconds (generous: the cores may be shared)."""
    from test_training_data import running

    deadline = time.monotonic() + within
    while [pid for pid in pids if running(pid)]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_the_map_keeps_the_order_and_leaves_no_result_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # read once, before any test: TMPDIR is too late here
    tasks = list(range(100, 0, -1))  # the first tasks take longest: the map must still yield them first
    assert list(pmap(bytes, tasks, 2, "test")) == [bytes(n) for n in tasks]
    assert list(tmp_path.iterdir()) == []


def failing(n: int) -> int:
    """A task that fails when it is the fourth."""
    if n == 3:
        raise ValueError("task 3")
    time.sleep(0.05)
    return n


def test_a_failed_map_ends_its_own_workers_and_no_other_child() -> None:
    bystander = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,))
    bystander.start()
    try:
        with pytest.raises(ValueError, match="task 3"):
            list(pmap(failing, range(40), 2, "test"))
        time.sleep(0.5)
        assert bystander.is_alive()
        assert multiprocessing.active_children() == [bystander]  # the map's workers are gone
    finally:
        bystander.terminate()
        bystander.join()


def test_an_interrupted_pool_drops_its_tasks_and_ends_its_workers() -> None:
    """As the evaluation's GPU path submits them: no task submitted before the interruption is waited for."""
    with pytest.raises(KeyboardInterrupt), pool(2) as workers:
        tasks = [workers.submit(time.sleep, 30) for _ in range(8)]
        while not tasks[0].running():  # handed to a worker
            time.sleep(0.01)
        raise KeyboardInterrupt
    assert not [t for t in tasks if not t.cancelled() and t.exception() is None]  # none ran to its end
    assert multiprocessing.active_children() == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the processes from /proc (Linux)")
@pytest.mark.parametrize("round_", range(3))
def test_an_interrupted_map_of_large_results_ends_at_once(round_: int, tmp_path: Path) -> None:
    from test_training_data import workers_of

    proc = subprocess.Popen([sys.executable, "-c", LARGE], stdout=subprocess.PIPE, text=True,
                            env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path),
                                 "PYTHONPATH": str(Path(__file__).parents[1])})
    for _ in range(3 + round_):  # results are flowing
        assert proc.stdout.readline().strip() == str(64 << 20)
    workers = workers_of(proc.pid)
    assert len(workers) == 2
    time.sleep(0.05 * round_)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    assert ended(workers)
    assert list(tmp_path.iterdir()) == []


def descendants(pid: int) -> list[int]:
    """The live processes below `pid`: its children, theirs, and so on."""
    from test_training_data import workers_of

    found, todo = [], [pid]
    while todo:
        children = workers_of(todo.pop())
        found += children
        todo += children
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the processes from /proc (Linux)")
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_killed_map_leaves_no_process_behind(method: str) -> None:
    """kill -9 of the process that maps: its workers end within seconds, and with them a fork server's
    process and the resource tracker, however the workers were started (a fork server's are not the
    killed process's children; the default start method of Python 3.14 on Linux)."""
    proc = subprocess.Popen([sys.executable, "-c", SLEEPING, method], stdout=subprocess.PIPE, text=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.stdout.readline().strip() == "at work"
    below = descendants(proc.pid)
    assert len(below) >= 2
    proc.kill()
    proc.wait(timeout=30)
    assert ended(below)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the processes from /proc (Linux)")
def test_the_next_map_removes_the_results_folder_of_a_killed_one_only(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def start() -> tuple[subprocess.Popen, Path]:
        before = set(tmp_path.iterdir())
        proc = subprocess.Popen([sys.executable, "-c", SLEEPING, "fork"], stdout=subprocess.PIPE, text=True,
                                env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path),
                                     "PYTHONPATH": str(Path(__file__).parents[1])})
        assert proc.stdout.readline().strip() == "at work"
        (folder,) = set(tmp_path.iterdir()) - before
        return proc, folder

    (killed, left), (alive, held) = start(), start()
    try:
        below = descendants(killed.pid)
        killed.kill()
        killed.wait(timeout=30)
        assert ended(below)  # the map's workers are gone; its results folder is left
        assert left.name.startswith("rlcsc-results-") and left.is_dir()
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        assert list(pmap(bytes, [3, 1], 2, "test")) == [bytes(3), bytes(1)]
        assert list(tmp_path.iterdir()) == [held]
    finally:
        alive.kill()
        alive.wait(timeout=5)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc")
def test_workers_and_the_calling_process_keep_the_memory_they_free(tmp_path: Path) -> None:
    (tmp_path / "faults.py").write_text(FAULTS)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path}:{Path(__file__).parents[1]}"}
    found = {}
    for mode, code in RUN.items():
        script = f"from faults import faults\nfrom rlcsc.parallel import keep_freed_memory, pool\n{code}\n"
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
        found[mode] = int(proc.stdout)
    assert found["plain"] > 500 and found["kept"] < 50 and found["worker"] < 50, found


def _blas_threads(_: object = None) -> list[int]:
    from threadpoolctl import threadpool_info

    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_workers_share_the_cores_in_numpy_s_blas_too() -> None:
    """numpy's BLAS, loaded in the parent with a thread per core, runs a worker's share of them in each worker."""
    import numpy  # noqa: F401  (its BLAS loaded before the workers start)

    if not _blas_threads():
        pytest.skip("no BLAS that threadpoolctl can size is loaded here")
    with pool(2) as workers:
        assert workers.submit(_blas_threads).result() == [max(1, (os.cpu_count() or 1) // 2)] * len(_blas_threads())


def test_a_map_starts_no_more_workers_than_it_has_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--jobs` far above the tasks (or the cores) starts one worker per task at most."""
    from rlcsc import parallel

    asked = []
    real = parallel.pool

    def counting(jobs: int):
        asked.append(jobs)
        return real(jobs)

    monkeypatch.setattr(parallel, "pool", counting)
    assert list(parallel.pmap(abs, [-1, -2, -3], 64, desc="test")) == [1, 2, 3]
    assert asked == [3]
