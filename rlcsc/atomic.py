"""Files and folders written atomically: to a temporary name beside the target, then renamed, so a
crash never leaves a half-written result under the final name."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary(path: Path) -> Path:
    """The temporary name beside `path`: hidden, keeping its suffix (a writer may choose its format by it)."""
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def atomically(write: Callable[[Path], None], path: Path) -> None:
    """`write` to the temporary name of `path`, then rename it; a failure leaves neither."""
    tmp = temporary(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def folder_atomically(path: Path) -> Iterator[Path]:
    """A fresh temporary folder beside `path` to fill; when the block ends without error it replaces
    `path` whole. A failure leaves `path` as it was and no temporary folder."""
    tmp = temporary(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(text: str, path: Path) -> None:
    atomically(lambda tmp: tmp.write_text(text), path)


def write_json(obj: dict | list, path: Path) -> None:
    write_text(json.dumps(obj, indent=2) + "\n", path)


def save_torch(obj: dict, path: Path) -> None:
    """`torch.save`, atomically (torch is imported here, so that the data stages need not load it)."""
    import torch

    atomically(lambda tmp: torch.save(obj, tmp), path)
