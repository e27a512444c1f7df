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


def test_outside_a_git_checkout_the_commit_is_the_one_the_environment_names(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An unpacked copy (no .git) records $RLCSC_COMMIT, else no commit."""
    monkeypatch.setattr(provenance, "PACKAGE", tmp_path / "rlcsc")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git looks no higher than tmp_path
    monkeypatch.setenv("RLCSC_COMMIT", "abc123")
    assert provenance.commit() == "abc123"
    monkeypatch.delenv("RLCSC_COMMIT")
    assert provenance.commit() is None


def test_a_repository_the_package_is_installed_inside_is_not_the_project_s(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed (not editable) into a virtual environment inside another project's checkout, the package records
    $RLCSC_COMMIT, else no commit: never that project's commit."""
    package = tmp_path / ".venv" / "lib" / "site-packages" / "rlcsc"
    package.mkdir(parents=True)
    (package / "train.py").write_text("x = 1\n")
    (tmp_path / ".gitignore").write_text(".venv/\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "another project"], check=True)
    monkeypatch.setattr(provenance, "PACKAGE", package)
    monkeypatch.setenv("RLCSC_COMMIT", "abc123")
    assert provenance.commit() == "abc123"
    monkeypatch.delenv("RLCSC_COMMIT")
    assert provenance.commit() is None


def test_the_code_hash_changes_when_a_module_is_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hash covers each file's path with its bytes: the same code under another module's name is other code."""
    package = tmp_path / "rlcsc"
    package.mkdir()
    monkeypatch.setattr(provenance, "PACKAGE", package)
    (package / "a.py").write_text("x = 1\n")
    before = provenance.digest({package / "a.py"})
    (package / "a.py").rename(package / "b.py")
    assert provenance.digest({package / "b.py"}) != before


def test_a_lazy_import_inside_a_function_is_part_of_the_closure() -> None:
    """`rlcsc.record` imports the training code at module level; `rlcsc.train` reaches `rlcsc.recipe`; and the
    CLI's handlers import their modules inside functions, which the closure follows too."""
    files = {p.name for p in provenance.closure({"rlcsc.cli"})}
    assert {"record.py", "train.py", "recipe.py", "atomic.py", "lock.py"} <= files
    assert "record.py" not in {p.name for p in provenance.closure({"rlcsc.cli"}, frozenset({"rlcsc.cli"}))}
