"""One writer per output: a command holds a lock on what it writes, and a second writer ends at once.

The lock of an output `path` is the file `.<name>.lock` beside it (in its folder with symbolic links
resolved, so that every path to the output names one lock), locked with `flock`, which the
system releases when its process ends, however it ends: the lock of a dead process is stale by
construction and taken over. The file says who holds it (process id, host, command, since when), for
the refusal of a second writer, and lists the temporaries the holder made for the output
(`rlcsc.atomic`), so that the next writer removes what a killed one left. It is removed when its
holder ends, with the folders its taking made that are still empty (a command refused after taking it
leaves nothing behind). A file of that name that is not such a lock is never written over nor removed
(an empty one is taken for the lock of a process killed as it began).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import shutil
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rlcsc.errors import RlcscError

try:
    import fcntl
except ModuleNotFoundError:  # Windows
    raise SystemExit("rlcsc: error: the package locks its outputs with POSIX file locks (fcntl), which this "
                     "system lacks; run it on Linux, or on Windows under WSL") from None


@dataclass(frozen=True)
class Lock:
    """A held lock: the output it guards, its file, the open descriptor that holds it and the folders made
    for it (the deepest first)."""

    path: Path
    file: Path
    fd: int
    made: tuple[Path, ...]


_HELD: list[Lock] = []  # the locks this process holds
_NOTING = threading.Lock()  # temporaries are made by several threads at once (the download's)


def lock_file(path: Path) -> Path:
    """The lock file of output `path`: hidden, beside it."""
    return path.with_name(f".{path.name}.lock")


@contextmanager
def writing(*paths: Path) -> Iterator[None]:
    """Hold the lock of every output in `paths` for the block (one this process already holds is
    held once), making the folder each lies in; one clear error naming the holder if another process
    writes one of them."""
    with contextlib.ExitStack() as stack:
        for path in paths:
            canonical = _canonical(path)
            stack.enter_context(_holding(canonical, _shown(path, canonical)))
        yield


def _shown(path: Path, canonical: Path) -> str:
    """An output in an error: as the user gave it, and, where a symbolic link in it leads elsewhere, where it is."""
    return str(path) if Path(os.path.abspath(path)) == canonical else f"{path} (that is, {canonical})"


def _canonical(path: Path) -> Path:
    """`path` with the folder it lies in resolved as the system resolves it (symbolic links followed before any
    `..` after them) and its own name kept: one output, whichever path names it (a rename to a name that is a
    symbolic link replaces the link, not its target, so the name is not resolved; `.` and `..` name a folder, which
    is resolved whole). The root folder is one clear error: it has no name for a lock beside it."""
    path = Path(path)
    if path.name in ("", ".."):
        path = Path(os.path.realpath(path))
        if not path.name:
            raise RlcscError(f"{path} is the root folder; name a folder in it to write into")
    return Path(os.path.realpath(path.parent)) / path.name


@contextmanager
def _holding(path: Path, shown: str) -> Iterator[None]:
    if any(lock.path == path for lock in _HELD):
        yield
        return
    lock = _acquire(path, shown)
    _HELD.append(lock)
    try:
        yield
    finally:
        _HELD.remove(lock)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock.file, follow_symlinks=False).st_ino == os.fstat(lock.fd).st_ino:
                lock.file.unlink()  # while still holding it: a writer waiting on it then finds it gone
        os.close(lock.fd)
        _remove_empty(lock.made)


def _remove_empty(folders: tuple[Path, ...]) -> None:
    """Remove the folders made for a lock (the deepest first) while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break  # the output, or something else, is in it


def check_folders(path: Path) -> None:
    """One clear error where a file stands in the place of a folder that `path` would be written in."""
    inside = next((folder for folder in path.parents if folder.exists()), None)
    if inside is not None and not inside.is_dir():
        raise RlcscError(f"{inside} (in {path}) is a file, not a folder")


def _acquire(path: Path, shown: str) -> Lock:
    """Take the lock of `path` (`shown` in errors); a lock that cannot be taken leaves none of the folders made
    for it."""
    check_folders(path)
    made = tuple(folder for folder in (path.parent, *path.parent.parents) if not folder.exists())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _take(path, shown, lock_file(path), made)
    except BaseException:
        _remove_empty(made)
        raise


def _take(path: Path, shown: str, file: Path, made: tuple[Path, ...]) -> Lock:
    """The lock file `file` of `path` (`shown` in errors), made or taken over from a process that ended, and
    locked."""
    while True:
        try:
            fd, created = os.open(file, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644), True
        except FileExistsError:
            try:
                fd, created = os.open(file, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC), False
            except FileNotFoundError:
                continue  # its holder ended and removed it meanwhile: take a fresh one
        except OSError as err:
            if err.errno != errno.ENAMETOOLONG:  # a read-only folder, or one it may not write: named by the output
                raise OSError(err.errno, err.strerror, shown) from None
            raise RlcscError(f"the name of {shown} is too long: its lock file, .<name>.lock beside it, would pass the "
                             "system's limit on a name; give a shorter one") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RlcscError(f"{file} (the lock of {shown}) is not a file; move it away")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RlcscError(f"{shown} is being written by {_holder(fd)}; wait for it to end, "
                                 "or write elsewhere") from None
            if not _names(file, fd):
                os.close(fd)  # its holder ended and removed it meanwhile: take a fresh one
                continue
            if not created:
                _clean_up_after(path, shown, file, fd)
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                      "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            return Lock(path, file, fd, made)
        except BaseException:
            os.close(fd)
            raise


def _names(file: Path, fd: int) -> bool:
    """Whether `file` is still the file open at `fd`, not removed or replaced since it was opened."""
    try:
        return os.stat(file, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _lines(fd: int) -> list[str]:
    return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace").splitlines()


def _holder(fd: int) -> str:
    """Who holds the lock open at `fd`, in words."""
    try:
        record = json.loads(_lines(fd)[0])
        where = "" if record["host"] == socket.gethostname() else f" on {record['host']}"
        return f"process {record['pid']}{where} (`{record['command']}`, since {record['since']})"
    except (IndexError, ValueError, KeyError, TypeError):
        return "another process"  # it has just begun, and not yet said who it is


def _clean_up_after(path: Path, shown: str, file: Path, fd: int) -> None:
    """The stale lock of a process that ended without releasing it (killed): remove the temporaries
    it lists. A file that is not such a lock is refused, never written over."""
    lines = _lines(fd)
    if not lines:
        return  # its holder was killed as it began
    try:
        json.loads(lines[0])["pid"]
    except (ValueError, KeyError, TypeError):
        raise RlcscError(f"{file} is in the way of the lock of {shown} and is not one; move it away") from None
    for line in lines[1:]:
        try:
            tmp = Path(json.loads(line))
        except (ValueError, TypeError):
            continue  # the last line, cut short by the kill
        if not (tmp.name.startswith(".") and ".tmp" in tmp.name and (tmp.parent == path.parent or path in tmp.parents)):
            continue  # only a temporary of this output, where `rlcsc.atomic` makes them
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def note_temporary(path: Path, tmp: Path) -> None:
    """Record `tmp`, a temporary made for output `path`, in the lock that guards `path` (itself or a
    folder above it), if this process holds one."""
    path = _canonical(path)
    for lock in _HELD:
        if lock.path == path or lock.path in path.parents:
            with _NOTING:
                os.lseek(lock.fd, 0, os.SEEK_END)
                os.write(lock.fd, (json.dumps(str(_canonical(tmp))) + "\n").encode())
            return
