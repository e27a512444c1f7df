"""Files and folders written atomically: to a temporary name beside the target, then renamed, so a
crash never leaves a half-written result under the final name; a file is put on the disk (`fsync`)
before it is renamed, so that a power cut does not either.

A temporary is a new name from the system (`tempfile.mkstemp`/`mkdtemp`), created exclusively, so it is
never a file of someone else's; it is removed on any exit the process lives through (an error, Ctrl-C,
SIGTERM: `rlcsc.cli`), and noted in the lock of its output (`rlcsc.lock`), whose next writer removes
what a killed process left. No file but the target is ever replaced or removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rlcsc.errors import RlcscError
from rlcsc.lock import check_folders, note_temporary


def _umask() -> int:
    """The process's umask (read by setting it, so once, at import, before any thread runs)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _umask()


def check_result_file(path: Path, replace: bool) -> None:
    """One clear error, before the minutes of a measurement, for a file its result could not be written to
    after them: a folder, one inside a file, or (unless `replace`) one that exists (a measurement is never written
    over)."""
    if path.is_dir():
        raise RlcscError(f"{path} is a folder; name the file the result goes to")
    if path.exists() and not replace:
        raise RlcscError(f"{path} already exists; give another --out or move it away")
    check_folders(path)


@contextmanager
def temporary(path: Path, folder: bool = False) -> Iterator[Path]:
    """A new empty file (or folder) beside `path`, hidden, keeping its suffix (a writer may choose its
    format by it), with the permissions a new file gets; removed when the block ends, unless it was
    renamed into place. Its name takes at most 32 characters of `path`'s stem and a suffix only of at most 32
    (no format is named by a longer one), so that it is not longer than the system's limit when `path`'s is not."""
    try:
        if folder:
            tmp = Path(tempfile.mkdtemp(".tmp", f".{path.name[:32]}.", path.parent))
        else:
            suffix = path.suffix if len(path.suffix) <= 32 else ""
            fd, name = tempfile.mkstemp(f".tmp{suffix}", f".{path.stem[:32]}.", path.parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as err:  # a missing or read-only folder: named by the output, not the temporary
        raise OSError(err.errno, err.strerror, str(path)) from None
    try:
        os.chmod(tmp, (0o777 if folder else 0o666) & ~UMASK)
        note_temporary(path, tmp)
        yield tmp
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def atomically(write: Callable[[Path], None], path: Path) -> None:
    """`write` to a temporary beside `path`, then rename it to `path`; a failure leaves neither. A file
    the system refuses (a full disk, a read-only folder) is an OSError naming `path`."""
    all_atomically({path: write})


def all_atomically(writes: dict[Path, Callable[[Path], None]]) -> None:
    """Each `write` to a temporary beside its path; once all are written, each renamed to its path: a failure in
    any write leaves every path as it was, so files that describe one result never mix an old one and a new one
    (but for an interruption between two renames). A file the system refuses is an OSError naming its path."""
    with contextlib.ExitStack() as stack:
        made = [(path, write, stack.enter_context(temporary(path))) for path, write in writes.items()]
        for path, write, tmp in made:
            with _named(path, tmp):
                write(tmp)
                _sync(tmp)
        for path, _, tmp in made:
            with _named(path, tmp):
                os.replace(tmp, path)
        for folder in dict.fromkeys(path.parent for path in writes):
            _sync(folder)


def _sync(path: Path) -> None:
    """Have the system put `path` (a file's bytes, or a folder's names) on the disk now: a power cut after a
    rename then finds the new file whole or the old one, never an empty one. (The folders of the data stages,
    `folder_atomically`'s, are not synced: their `SHA256SUMS` are checked when they are read.)"""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno != errno.EINVAL:  # a file system that does not sync folders
            raise
    finally:
        os.close(fd)


@contextmanager
def _named(path: Path, tmp: Path) -> Iterator[None]:
    """An OSError about the temporary `tmp` (or about no file) raised as one about `path`, which the user asked for."""
    try:
        yield
    except OSError as err:
        if err.filename not in (None, str(tmp)):
            raise
        raise OSError(err.errno, err.strerror or str(err), str(path)) from None


@contextmanager
def folder_atomically(path: Path) -> Iterator[Path]:
    """A new temporary folder beside `path` (its parent folders made) to fill; when the block ends
    without error it replaces `path` whole. A failure leaves `path` as it was and no temporary folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with temporary(path, folder=True) as tmp:
        yield tmp
        with temporary(path, folder=True) as old:  # the previous `path` is moved here, then removed
            existed = path.exists()
            try:
                if existed:
                    os.replace(path, old)
                os.replace(tmp, path)
            except BaseException:  # Ctrl-C or SIGTERM may come between the renames: restore from what is on disk
                if existed and not path.exists():
                    os.replace(old, path)
                raise


def text_writer(text: str) -> Callable[[Path], None]:
    """A `write` of `text` in UTF-8; a file name that is not UTF-8 (held by Python as surrogates) is written as
    its own bytes."""
    return lambda tmp: tmp.write_text(text, encoding="utf-8", errors="surrogateescape")


def json_text(obj: dict | list) -> str:
    return json.dumps(obj, indent=2) + "\n"


def write_text(text: str, path: Path) -> None:
    atomically(text_writer(text), path)


def write_json(obj: dict | list, path: Path) -> None:
    write_text(json_text(obj), path)


def torch_writer(obj: dict) -> Callable[[Path], None]:
    """A `write` of `torch.save` (torch is imported here, so that the data stages need not load it). Through a
    Python file: its writes report a full disk as the OSError it is (torch's own writer turns it into an
    obscure RuntimeError), and the archive inside is named "archive" whatever the temporary's name (torch
    names it after the file otherwise), so the same object gives the same bytes."""
    import torch

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    return save


def save_torch(obj: dict, path: Path) -> None:
    atomically(torch_writer(obj), path)
