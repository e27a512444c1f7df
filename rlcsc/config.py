"""Stage parameters from `params.yaml`: each block becomes its stage's frozen dataclass, unknown keys rejected."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rlcsc.errors import RlcscError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str) -> T:
    """Build `cls` from a mapping, naming the valid keys when one is unknown; lists become tuples."""
    data = data or {}
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise RlcscError(f"unknown key(s) {unknown} in {where}; valid keys: {names}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def load_block(path: Path, block: str, cls: type[T]) -> T:
    """Read block `block` of the YAML file at `path` into `cls`."""
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise RlcscError(f"cannot read params file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise RlcscError(f"params file {path} is not valid YAML: {err}") from None
    return from_dict(cls, params.get(block), f"{path}:{block}")
