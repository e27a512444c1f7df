"""One writer per output: a second writer ends at once naming the holder, the lock of a killed process is
taken over with its temporaries removed, and a user's file is never taken for a lock."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlcsc.atomic import save_torch, temporary
from rlcsc.cli import main
from rlcsc.errors import RlcscError
from rlcsc.inference import model_state
from rlcsc.lock import _canonical, lock_file, writing
from rlcsc.models.rlcsc import RLCSC, RLCSCConfig

REPO = Path(__file__).resolve().parents[1]
# Holds the lock of argv[1] while writing it, its temporary half written, until killed.
HOLD = """
import sys, time
from pathlib import Path
from rlcsc.atomic import atomically
from rlcsc.lock import writing

def write(tmp):
    tmp.write_text("half")
    print(tmp, flush=True)
    time.sleep(600)

with writing(Path(sys.argv[1])):
    atomically(write, Path(sys.argv[1]))
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    """Another process writing tmp_path/out.png: the process and its temporary."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "out.png")], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.is_file(), "the holding process did not start"
    yield proc, tmp
    proc.kill()
    proc.wait()


def sr(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlcsc.cli", "sr", str(tmp_path / "in.png"), "--scale", "2",
                           "--model", str(tmp_path / "m.pt"), "-o", str(tmp_path / "out.png"), *args],
                          capture_output=True, text=True, check=False, cwd=REPO)


def test_a_second_writer_ends_at_once_naming_the_holder_and_a_killed_holder_is_taken_over(
        holder: tuple[subprocess.Popen, Path], tmp_path: Path) -> None:
    proc, tmp = holder
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "in.png")
    save_torch(model_state(RLCSC(RLCSCConfig(recursions=1, features=2, codes=2))), tmp_path / "m.pt")
    second = sr(tmp_path)
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert second.stderr.strip().splitlines() == [
        (f"rlcsc sr: error: {tmp_path / 'out.png'} is being written by process {proc.pid} "
         f"(`-c {tmp_path / 'out.png'}`, since {second.stderr.split('since ')[1].split(')')[0]}); wait for it to end, "
         "or write elsewhere")]
    assert not (tmp_path / "out.png").exists() and tmp.read_text() == "half"
    proc.kill()  # kill -9: neither its temporary nor its lock file is removed by it
    proc.wait()
    assert tmp.exists() and lock_file(tmp_path / "out.png").exists()
    third = sr(tmp_path)
    assert third.returncode == 0, third.stderr
    assert Image.open(tmp_path / "out.png").size == (16, 16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "m.pt", "out.png"]  # no temporary, no lock


@pytest.mark.parametrize("argv", [
    ["download", "--out", "{out}"],
    ["augment", "--out", "{out}"],
    ["patch", "--out", "{out}"],
    ["train", "--experiment", "K25", "--out", "{out}"],
    ["evaluate", "--method", "bicubic", "--out", "{out}"],
    ["record", "--out", "{out}"],
    ["compare", "--variant", "a:", "--steps", "1", "--out", "{out}"],
    ["record", "--budget", "quick", "--raw", "{raw}", "--work", "{out}", "--out", "{tmp}/run"],
    ["compare", "--budget", "quick", "--raw", "{raw}", "--work", "{out}", "--variant", "a:", "--steps", "1", "--out",
     "{tmp}/c.json"],
    ["checksums", "{out}"],  # sealing a run that a `record` is writing: refused, not sealed half way
    ["compare", "--variant", "a:", "--steps", "1", "--out", "{out}/c.json"],  # it seals the folder's SHA256SUMS too
    ["benchmark", "winograd", "--steps", "1", "--out", "{out}"],
], ids=lambda argv: " ".join(a for a in argv if not a.startswith("{")))
def test_every_writer_of_a_folder_takes_its_lock(argv: list[str], holder: tuple[subprocess.Popen, Path],
                                                  mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the project's params.yaml
    proc, _ = holder
    fill = {"out": str(tmp_path / "out.png"), "raw": str(mirror), "tmp": str(tmp_path)}
    assert main([a.format(**fill) for a in argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"error: {tmp_path / 'out.png'} is being written by process {proc.pid} "
                            f"(`-c {tmp_path / 'out.png'}`, since {err[-1].split('since ')[1]}")
    assert not (tmp_path / "out.png").is_file() and not (tmp_path / "c.json").exists()  # --work is made, left empty
    assert not (tmp_path / "out.png").exists() or not any((tmp_path / "out.png").iterdir())


def test_an_output_named_through_a_linked_folder_is_the_same_output(holder: tuple[subprocess.Popen, Path],
                                                                   tmp_path: Path) -> None:
    """A second writer that names the held output through a symbolic link to its folder is refused too; and a
    temporary made through the link, left by a killed holder, is removed by the next writer."""
    proc, tmp = holder
    (tmp_path / "link").symlink_to(tmp_path)
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "c").symlink_to(tmp_path / "a" / "b")  # c/.. is a, as the system resolves it, not tmp_path
    assert lock_file(_canonical(tmp_path / "c" / ".." / "out.png")) == tmp_path / "a" / ".out.png.lock"
    with pytest.raises(RlcscError) as err:  # named as given, and where the link leads
        with writing(tmp_path / "link" / "out.png"):
            pass
    assert str(err.value).startswith(f"{tmp_path / 'link' / 'out.png'} (that is, {tmp_path / 'out.png'}) is being "
                                     f"written by process {proc.pid} ")
    proc.kill()
    proc.wait()
    with writing(tmp_path / "link" / "out.png"):
        assert not tmp.exists()
        with temporary(tmp_path / "link" / "out.png") as made:  # noted in the lock of the output, where it lies
            assert json.loads(lock_file(tmp_path / "out.png").read_text().splitlines()[-1]) == str(
                tmp_path / made.name)


def test_a_folder_named_by_dot_or_dot_dot_is_the_folder_and_the_root_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    assert _canonical(Path(".")) == tmp_path / "a" / "b" and _canonical(Path("..")) == tmp_path / "a"  # one lock
    with pytest.raises(RlcscError, match="^/ is the root folder; name a folder in it to write into$"):
        with writing(Path("/")):
            pass


def test_a_folder_the_system_will_not_let_a_writer_write_is_named_by_the_output(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """A read-only folder refuses the lock file first: the one line names the output asked for, not its lock."""
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "in.png")
    save_torch(model_state(RLCSC(RLCSCConfig(recursions=1, features=2, codes=2))), tmp_path / "m.pt")
    opened = os.open

    def read_only(path: str | Path, *args: object, **kwargs: object) -> int:
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return opened(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    assert main(["sr", str(tmp_path / "in.png"), "--scale", "2", "--model", str(tmp_path / "m.pt"), "-o",
                 str(tmp_path / "out.png")]) == 1
    assert capsys.readouterr().err == f"rlcsc sr: error: {tmp_path / 'out.png'}: Read-only file system\n"


def test_a_file_in_the_way_of_a_lock_is_never_written_over(tmp_path: Path) -> None:
    lock = lock_file(tmp_path / "out.png")
    lock.write_text("my notes\n")
    with pytest.raises(RlcscError, match="is in the way of the lock of .*out.png and is not one; move it away"):
        with writing(tmp_path / "out.png"):
            pass
    assert lock.read_text() == "my notes\n"
    lock.unlink()
    with writing(tmp_path / "out.png"), writing(tmp_path / "out.png"):  # held once by one process
        assert lock.exists()
    assert not lock.exists()


def test_a_refused_command_leaves_no_folder_it_made(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("evaluate:\n  scale: [2]\n")
    out = tmp_path / "a" / "b" / "out"
    assert main(["evaluate", "--method", "bicubic", "--params", str(params), "--out", str(out)]) == 1
    assert "unknown key(s) ['scale']" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == [params]
    (tmp_path / "a").mkdir()
    with writing(out):
        (tmp_path / "a" / "b" / "notes.txt").write_text("")
    assert sorted(tmp_path.rglob("*")) == [tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "notes.txt",
                                          params]


def test_a_file_where_an_output_s_folder_would_be_is_named_in_one_line(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "notes").write_text("mine\n")
    out = tmp_path / "notes" / "results"
    assert main(["evaluate", "--method", "bicubic", "--out", str(out)]) == 1
    said = f"rlcsc evaluate: error: {tmp_path / 'notes'} (in {out}) is a file, not a folder\n"
    assert capsys.readouterr().err == said
    assert (tmp_path / "notes").read_text() == "mine\n"
    book = tmp_path / "notes" / "book"
    for argv, where in ((["params", "--resolved"], book), (["memory", "--out"], book),  # each command that writes
                        (["report", "table1", "--out"], book / "table1.ipynb")):
        assert main([*argv, str(book)]) == 1
        said = f"rlcsc {argv[0]}: error: {tmp_path / 'notes'} (in {where}) is a file, not a folder\n"
        assert capsys.readouterr().err == said


def test_a_name_too_long_for_its_lock_is_one_line_and_leaves_no_folder(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "a" / "b" / ("o" * (os.pathconf(tmp_path, "PC_NAME_MAX") - len(".lock")))  # the name fits
    assert main(["evaluate", "--method", "bicubic", "--out", str(out)]) == 1
    assert capsys.readouterr().err.strip() == (f"rlcsc evaluate: error: the name of {out} is too long: its lock file, "
                                               ".<name>.lock beside it, would pass the system's limit on a name; give "
                                               "a shorter one")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("moment", ["open", "flock"])
def test_a_lock_its_holder_removes_meanwhile_is_taken_afresh(moment: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder of a lock ends, removing it, after this writer finds it and before it opens it, or after it
    opens it and before it locks it: the writer takes a fresh lock."""
    lock = lock_file(tmp_path / "out.png")
    lock.write_text("")
    ended = []

    def end_holder() -> None:
        if not ended:
            lock.unlink()
            ended.append(moment)

    if moment == "open":
        real_open = os.open

        def open_(path: Path, flags: int, *args: int) -> int:
            if not flags & os.O_CREAT:  # the open of a lock that exists
                end_holder()
            return real_open(path, flags, *args)

        monkeypatch.setattr(os, "open", open_)
    else:
        real_flock = fcntl.flock

        def flock(fd: int, operation: int) -> None:
            end_holder()
            real_flock(fd, operation)

        monkeypatch.setattr(fcntl, "flock", flock)
    with writing(tmp_path / "out.png"):
        assert ended == [moment] and json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_a_system_without_posix_file_locks_is_told_so_in_one_line() -> None:
    """Where `fcntl` does not exist (Windows), the command ends with one line saying what to do instead."""
    code = "import sys; sys.modules['fcntl'] = None; from rlcsc.cli import main; main(['params'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "rlcsc: error: the package locks its outputs with POSIX file locks (fcntl), which this system lacks; "
        "run it on Linux, or on Windows under WSL"], proc.stderr


def test_a_temporary_inside_a_locked_folder_is_noted_in_the_folder_s_lock(tmp_path: Path) -> None:
    """A folder's writer (`rlcsc record` holds its run's folder) notes the temporaries of the files it writes in it,
    so that the next writer removes those a killed one left."""
    from rlcsc.atomic import temporary

    out = tmp_path / "run"
    out.mkdir()
    with writing(out), temporary(out / "train.json") as tmp:
        assert json.loads(lock_file(out).read_text().splitlines()[-1]) == str(tmp)


def test_a_stale_lock_takes_only_hidden_temporaries_of_its_output_with_it(tmp_path: Path) -> None:
    """A killed writer's lock lists what it made; the next writer removes those that are temporaries of the output
    (hidden names beside it), never a user's file it might list nor a file elsewhere."""
    out = tmp_path / "out.png"
    theirs, mine, elsewhere = (tmp_path / ".out.k2.tmp.png", tmp_path / "notes.tmp.txt",
                               tmp_path / "o" / ".out.k3.tmp.png")
    elsewhere.parent.mkdir()
    for path in (theirs, mine, elsewhere):
        path.write_text("x")
    record = {"pid": 1, "host": "h", "command": "rlcsc sr", "since": "2026-01-01 00:00:00"}
    lock_file(out).write_text("".join(json.dumps(x) + "\n" for x in (record, str(theirs), str(mine), str(elsewhere))))
    with writing(out):
        pass
    assert not theirs.exists() and mine.exists() and elsewhere.exists() and not lock_file(out).exists()
