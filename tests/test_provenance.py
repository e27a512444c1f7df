"""Which code made a result: the commit a run records, "-dirty" where the code differs from it."""

import subprocess
from pathlib import Path

import pytest

from rlcsc import provenance


def test_what_runs_write_does_not_make_the_commit_dirty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new `runs/<name>/` (untracked until committed), or a committed one extended, is not a change to the code;
    an edited module of the package, or one git does not track, is."""
    package = tmp_path / "rlcsc"
    package.mkdir()
    (package / "train.py").write_text("x = 1\n")
    (tmp_path / "runs" / "K25-paper").mkdir(parents=True)
    (tmp_path / "runs" / "K25-paper" / "train.json").write_text("{}")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "code"], check=True)
    monkeypatch.setattr(provenance, "PACKAGE", package)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "runs" / "K25-fast").mkdir(parents=True)
    (tmp_path / "runs" / "K25-fast" / "train.json").write_text("{}")
    (tmp_path / "runs" / "K25-paper" / "train.json").write_text('{"extended": true}')
    assert provenance.commit() == head
    (package / "new.py").write_text("")
    assert provenance.commit() == head + "-dirty"
    (package / "new.py").unlink()
    (package / "train.py").write_text("x = 2\n")
    assert provenance.commit() == head + "-dirty"
