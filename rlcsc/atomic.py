"""Files written atomically: to a temporary name beside the target, then renamed, so a crash never
leaves a half-written file under the final name."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path


def _atomically(write: Callable[[Path], None], path: Path) -> None:
    """`write` to a temporary name beside `path`, then rename it; a failure leaves neither."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(text: str, path: Path) -> None:
    _atomically(lambda tmp: tmp.write_text(text), path)


def write_json(obj: dict | list, path: Path) -> None:
    write_text(json.dumps(obj, indent=2) + "\n", path)


def save_torch(obj: dict, path: Path) -> None:
    """`torch.save`, atomically (torch is imported here, so that the data stages need not load it)."""
    import torch

    _atomically(lambda tmp: torch.save(obj, tmp), path)
