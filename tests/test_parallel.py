"""The ordered process map: its results, in order, and an interruption that ends it at once however
large the results are that the workers are handing back."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rlcsc.parallel import pmap

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


def test_the_map_keeps_the_order_and_leaves_no_result_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tasks = list(range(100, 0, -1))  # the first tasks take longest: the map must still yield them first
    assert list(pmap(bytes, tasks, 2, "test")) == [bytes(n) for n in tasks]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the processes from /proc (Linux)")
@pytest.mark.parametrize("round_", range(3))
def test_an_interrupted_map_of_large_results_ends_at_once(round_: int, tmp_path: Path) -> None:
    from test_training_data import running, workers_of

    proc = subprocess.Popen([sys.executable, "-c", LARGE], stdout=subprocess.PIPE, text=True,
                            env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).parents[1])})
    for _ in range(3 + round_):  # results are flowing
        assert proc.stdout.readline().strip() == str(64 << 20)
    workers = workers_of(proc.pid)
    assert len(workers) == 2
    time.sleep(0.05 * round_)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 130
    time.sleep(1)
    assert not [pid for pid in workers if running(pid)]
    assert list(tmp_path.iterdir()) == []
