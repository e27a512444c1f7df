"""Stage parameters from `params.yaml`: each block becomes its stage's frozen dataclass.

A block's values are, in increasing precedence: the block itself (the paper's protocol), the
experiment's entry under `experiments` (train only), and the active budget's entry under
`budgets.<budget>` (the `quick` miniature). Unknown keys are rejected with the valid ones named.
"""

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


def read_params(path: Path) -> dict:
    """The whole params file as a mapping."""
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise RlcscError(f"cannot read params file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise RlcscError(f"params file {path} is not valid YAML: {err}") from None
    if not isinstance(params, dict):
        raise RlcscError(f"params file {path} must hold a mapping of blocks")
    return params


def load_block(path: Path, block: str, cls: type[T], experiment: str | None = None) -> T:
    """Block `block` of the params file at `path`, with experiment and budget overrides applied."""
    params = read_params(path)
    values = dict(params.get(block) or {})
    where = f"{path}:{block}"
    if experiment is not None:
        experiments = params.get("experiments") or {}
        if experiment not in experiments:
            raise RlcscError(f"unknown experiment {experiment!r} in {path}; defined: {sorted(experiments)}")
        values.update(experiments[experiment] or {})
        where += f" + experiments.{experiment}"
    budget = params.get("budget")
    if budget is not None:
        budgets = params.get("budgets") or {}
        if budget not in budgets:
            raise RlcscError(f"budget {budget!r} is not defined under `budgets` in {path}; defined: {sorted(budgets)}")
        values.update((budgets[budget] or {}).get(block) or {})
        where += f" + budgets.{budget}"
    return from_dict(cls, values, where)
