"""Files written atomically: to a temporary name beside the target, then renamed, so a crash never
leaves a half-written file under the final name."""

from __future__ import annotations

import json
import os
from pathlib import Path


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def write_text(text: str, path: Path) -> None:
    _tmp(path).write_text(text)
    os.replace(_tmp(path), path)


def write_json(obj: dict | list, path: Path) -> None:
    write_text(json.dumps(obj, indent=2) + "\n", path)


def save_torch(obj: dict, path: Path) -> None:
    """`torch.save`, atomically (torch is imported here, so that the data stages need not load it)."""
    import torch

    torch.save(obj, _tmp(path))
    os.replace(_tmp(path), path)
