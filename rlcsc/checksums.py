"""Checksum files: `SHA256SUMS` beside the files a command wrote, in the format of `sha256sum` (so
`sha256sum -c SHA256SUMS` checks a folder by hand too).

The augment and patch stages seal their output folders, and the stages that read them verify every
file once before using it; a recorded run (`runs/<name>/`) is sealed by `rlcsc record` and `rlcsc
compare` (or `rlcsc checksums` for a folder written before) and verified before the report reads it.
A file changed since, added or missing is named in one line, never used.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from rlcsc.atomic import write_text
from rlcsc.errors import RlcscError
from rlcsc.manifest import file_sha256

SUMS = "SHA256SUMS"


def files(folder: Path) -> list[str]:
    """The names of the files a folder's checksums cover: its regular files but hidden ones (temporary
    names) and the checksum file itself, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != SUMS)


def read_sums(folder: Path) -> dict[str, str]:
    """{name: sha256} of `folder/SHA256SUMS`; empty when there is none. A line that is not a SHA-256 and a name, as
    `seal` writes it, is one clear error (blank lines are passed over)."""
    path = folder / SUMS
    if not path.is_file():
        return {}
    sums = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="surrogateescape").splitlines(), 1):
        digest, _, name = line.partition("  ")
        if not line.strip():
            continue
        if not (re.fullmatch("[0-9a-f]{64}", digest) and name):
            raise RlcscError(f"corrupt {path}: its line {number} is not a SHA-256 and a file name (\"<64 hex digits>  "
                             f"<name>\"): {line[:80]!r}")
        sums[name] = digest
    return sums


def seal(folder: Path, names: Iterable[str] | None = None) -> None:
    """Write `folder/SHA256SUMS` with the SHA-256 of the files `names` as they are now (default: all of
    `files`, and no other line); the lines of other files are kept."""
    sums = read_sums(folder) if names is not None else {}
    sums.update({name: file_sha256(folder / name) for name in (files(folder) if names is None else names)})
    newline = next((name for name in sums if "\n" in name or "\r" in name), None)
    if newline is not None:  # a line per file: such a name would make a SHA256SUMS that its own check refuses
        raise RlcscError(f"{folder}: the file name {newline!r} holds a line break, which {SUMS} cannot list; rename it")
    write_text("".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items())), folder / SUMS)


def verify(folder: Path, redo: str, may_lack: tuple[str, ...] = (), unlisted: str | None = None) -> None:
    """Every file of `folder` is listed in its `SHA256SUMS` and matches it, and every file listed is
    there (the files of `may_lack` may be missing, or there but not listed); else one clear error naming the
    first that is not, and `redo` (what rebuilds it), or `unlisted` (default `redo`) for a folder without
    checksums or a file they do not list."""
    sums = read_sums(folder)
    if not sums:
        raise RlcscError(f"corrupt {folder}: no {SUMS} holds the checksums of its files (written before they had "
                         f"them, or damaged); {unlisted or redo}")
    for name in files(folder):
        if name not in sums and name not in may_lack:
            raise RlcscError(f"corrupt {folder / name}: {folder / SUMS} does not list it; {unlisted or redo}")
    for name, digest in sums.items():
        if name not in may_lack or (folder / name).exists():
            verify_file(folder / name, digest, redo)


def verify_run(folder: Path) -> None:
    """A recorded run's folder (`runs/<name>/`) holds what the program wrote and sealed, unchanged; but its
    `checkpoint.pt` may be missing or unlisted: only extending the run reads it, so a copy (a run kept without its
    checkpoint) may leave it out."""
    verify(folder, f"restore it with `git checkout -- {folder}` (a run whose `rlcsc record` was cut short is sealed "
                   "by its next call)", ("checkpoint.pt",),
           f"seal the folder with `rlcsc checksums {folder}` if the program wrote each of its files (a run recorded "
           f"before runs were sealed, a file a command added); else restore it with `git checkout -- {folder}` and "
           "move away any file added by hand")


def verify_file(path: Path, digest: str, redo: str) -> None:
    """The file `path` exists and has SHA-256 `digest`; else one clear error naming it and `redo`."""
    if not path.is_file():
        raise RlcscError(f"corrupt {path.parent}: {path.name} is missing, which {path.parent / SUMS} lists; {redo}")
    if file_sha256(path) != digest:
        raise RlcscError(f"corrupt {path}: its bytes differ from the SHA-256 that {path.parent / SUMS} holds; {redo}")
