"""Shared fixtures: the read-only mirrors of the benchmark images and of the released model files, a command that
must fail in one line, and Ctrl-C at a chosen checkpoint of training."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from rlcsc.cli import main
from rlcsc.data.download import MIRROR_ENV, WEIGHTS_MIRROR_ENV

REPO = Path(__file__).resolve().parents[1]


def shared(env: str, name: str, holds: str, what: str) -> Path:
    """$`env`, else shared/`name` in or beside the repository, a folder that holds the folder `holds`; skip when
    absent, fail where the variable names a folder that is not one."""
    named = os.environ.get(env)
    candidates = [Path(named)] if named else [root / "shared" / name for root in (REPO, REPO.parent)]
    for path in candidates:
        if (path / holds).is_dir():
            return path
    if named:  # named, and wrong: a mistake, not a machine without the files
        pytest.fail(f"${env} names no {what}: {named}")
    pytest.skip(f"no {what} found (set {env}; tried {', '.join(map(str, candidates))})")


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The data mirror of the benchmark images (`shared`)."""
    return shared(MIRROR_ENV, "datasets", "Set5", "data mirror")


@pytest.fixture(scope="session")
def weights_mirror() -> Path:
    """The mirror of the released model files (`shared`)."""
    return shared(WEIGHTS_MIRROR_ENV, "weights", "VDSR", "weights mirror")


@pytest.fixture
def one_line_error(capsys: pytest.CaptureFixture) -> Callable[[list[str]], str]:
    """`rlcsc ARGV` run in this process, which must exit with status 1 and one line on stderr: that line."""
    def run(argv: list[str]) -> str:
        capsys.readouterr()
        assert main(argv) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]
    return run


@pytest.fixture
def winograd_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every inner layer of a network by winograd, however narrow: the tests' networks are tiny, and
    `rlcsc.winograd.WIDE` keeps layers as narrow as theirs direct."""
    from rlcsc import winograd

    monkeypatch.setattr(winograd, "WIDE", 1)


@pytest.fixture
def ctrl_c_at_checkpoint(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[dict], bool]], None]:
    """Arm a SIGINT to this process as `rlcsc.train` writes a checkpoint whose state satisfies `when` (the last one of
    a run falls after the training loop's last host sync)."""
    import rlcsc.train

    def arm(when: Callable[[dict], bool]) -> None:
        real = rlcsc.train.save_torch

        def signalled(state: dict, path: Path) -> None:
            if when(state):
                os.kill(os.getpid(), signal.SIGINT)
            real(state, path)

        monkeypatch.setattr(rlcsc.train, "save_torch", signalled)
    return arm
