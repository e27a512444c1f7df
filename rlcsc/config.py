"""Stage parameters from `params.yaml`: each block becomes its stage's frozen dataclass.

A block's values come from up to three layers, in increasing precedence: the block itself (the
paper's protocol), the experiment's entry under `experiments` (block `train` only), and the active
budget's entry `budgets.<budget>.<block>`. Every value is checked where it stands, in whichever
layer, for type and range; a bad one ends with one line naming the layer, the key, the value and
what is allowed. A budget may not set a key that the experiment also sets (the experiment would
silently lose it), nor a machine setting (`MACHINE`: where and in which precision the arithmetic
runs is not part of a protocol). `resolve` keeps the layer every value came from, which
`rlcsc params` prints and every stage announces where the budget replaced a block's value.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rlcsc.errors import RlcscError

T = TypeVar("T")

BUDGETED = ("augment", "patch", "train", "evaluate")  # the blocks a budget may change
TOP_LEVEL = ("budget", "budgets", "experiments", *BUDGETED, "report")
MACHINE = {"train": ("device", "precision", "compile"), "evaluate": ("precision",)}


@dataclass(frozen=True)
class Rule:
    """What a value must satisfy, as a test and as the words an error message uses."""

    test: Callable[[Any], bool]
    text: str


def at_least(n: float) -> Rule:
    return Rule(lambda v: v >= n, f">= {n}")


def above(n: float) -> Rule:
    return Rule(lambda v: v > n, f"> {n}")


def within(low: float, high: float) -> Rule:
    """low <= v < high."""
    return Rule(lambda v: low <= v < high, f"in [{low}, {high})")


def one_of(*choices: Any) -> Rule:
    return Rule(lambda v: v in choices, "one of " + ", ".join(map(str, choices)))


def param(default: Any, rule: Rule | None = None) -> Any:
    """A dataclass field whose values (each element, for a list) must also satisfy `rule`."""
    if isinstance(default, list):
        default = tuple(default)
    return dataclasses.field(default=default, metadata={"rule": rule} if rule else {})


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _coerce(hint: Any, value: Any) -> Any:
    """`value` as type `hint` (int, float, bool, str, tuple[X, ...], X | None); ValueError if it is not."""
    if isinstance(hint, types.UnionType):
        if value is None and type(None) in hint.__args__:
            return None
        (hint,) = [a for a in hint.__args__ if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError
        return tuple(_coerce(hint.__args__[0], v) for v in value)
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and not isinstance(value, bool):
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ValueError from None
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    if hint is str and isinstance(value, str):
        return value
    raise ValueError


def _describe(hint: Any, rule: Rule | None) -> str:
    """What a value of `hint` satisfying `rule` is, in words: "an integer >= 1"."""
    if isinstance(hint, types.UnionType):
        (inner,) = [a for a in hint.__args__ if a is not type(None)]
        return f"null or {_describe(inner, rule)}"
    if typing.get_origin(hint) is tuple:
        return f"a non-empty list, each item {_describe(hint.__args__[0], rule)}"
    if rule and rule.text.startswith("one of"):
        return rule.text
    words = _TYPE_WORDS[hint]
    return f"{words} {rule.text}" if rule else words


@functools.cache
def _fields(cls: type) -> dict[str, tuple[Any, Rule | None]]:
    """Each field's type and rule."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f.metadata.get("rule")) for f in dataclasses.fields(cls)}


def check_value(cls: type, key: str, value: Any, where: str) -> Any:
    """`value` of field `key` of `cls`, checked and coerced; a one-line error names `where` it stands."""
    hint, rule = _fields(cls)[key]
    try:
        coerced = _coerce(hint, value)
        items = coerced if isinstance(coerced, tuple) else (coerced,)
        if rule and not all(rule.test(v) for v in items if v is not None):
            raise ValueError
    except ValueError:
        raise RlcscError(f"{where}: {key} = {value!r} is not allowed; it must be {_describe(hint, rule)}") from None
    return coerced


class Checked:
    """Base of the params dataclasses: every field is checked (and coerced) on construction, however
    the object is made (from params.yaml, `dataclasses.replace`, or directly)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, check_value(type(self), f.name, getattr(self, f.name), type(self).__name__))


def check_layer(cls: type, data: Any, where: str) -> dict[str, Any]:
    """One layer of a block (a mapping of some of `cls`'s fields), every key and value checked."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RlcscError(f"{where} must be a mapping of keys to values, got {data!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise RlcscError(f"unknown key(s) {unknown} in {where}; valid keys: {names}")
    return {k: check_value(cls, k, v, where) for k, v in data.items()}


def read_params(path: Path) -> dict:
    """The whole params file as a mapping, its top-level blocks and budgets checked."""
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise RlcscError(f"cannot read params file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise RlcscError(f"params file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(params, dict):
        raise RlcscError(f"params file {path} must hold a mapping of blocks")
    unknown = sorted(set(params) - set(TOP_LEVEL))
    if unknown:
        raise RlcscError(f"unknown block(s) {unknown} in {path}; valid blocks: {list(TOP_LEVEL)}")
    for name, budget in (params.get("budgets") or {}).items():
        blocks = budget or {}
        if not isinstance(blocks, dict) or set(blocks) - set(BUDGETED):
            raise RlcscError(f"{path}: budgets.{name} must map stage blocks {list(BUDGETED)} to their overrides")
        for block, keys in MACHINE.items():
            machine = sorted(set(blocks.get(block) or {}) & set(keys))
            if machine:
                raise RlcscError(f"{path}: budgets.{name}.{block} sets {machine}, which say where and in which "
                                 f"precision the arithmetic runs, not what it computes; set them in `{block}`")
    return params


def budget_name(params: dict, path: Path) -> str | None:
    """The active budget (None when the file names none), which must be defined under `budgets`."""
    budget = params.get("budget")
    if budget is not None and budget not in (params.get("budgets") or {}):
        raise RlcscError(f"budget {budget!r} is not defined under `budgets` in {path}; "
                         f"defined: {sorted(params.get('budgets') or {})}")
    return budget


@dataclass(frozen=True)
class Setting:
    """One resolved value, the layer it came from, and the value it replaced there (if any)."""

    value: Any
    source: str  # "default", the block name, "experiments.<e>" or "budgets.<b>.<block>"
    replaced: tuple[str, Any] | None = None  # (source, value) a budget overrode


def resolve(params: dict, path: Path, block: str, cls: type, experiment: str | None = None) -> dict[str, Setting]:
    """Every field of `cls` for `block`, with the layer it came from (see the module docstring)."""
    settings = {f.name: Setting(getattr(cls(), f.name), "default") for f in dataclasses.fields(cls)}
    layers = [(block, params.get(block))]
    if experiment is not None:
        experiments = params.get("experiments") or {}
        if experiment not in experiments:
            raise RlcscError(f"unknown experiment {experiment!r} in {path}; defined: {sorted(experiments)}")
        layers.append((f"experiments.{experiment}", experiments[experiment]))
    budget = budget_name(params, path) if block in BUDGETED else None
    if budget is not None:
        layers.append((f"budgets.{budget}.{block}", (params["budgets"][budget] or {}).get(block)))
    checked = [(source, check_layer(cls, data, f"{path}, {source}")) for source, data in layers]
    if experiment is not None and budget is not None:
        both = sorted(set(checked[1][1]) & set(checked[2][1]))
        if both:
            raise RlcscError(f"{path}: experiments.{experiment} and budgets.{budget}.{block} both set {both}; "
                             "a budget may not change what an experiment is")
    for source, values in checked:
        for key, value in values.items():
            old = settings[key]
            replaced = (old.source, old.value) if source.startswith("budgets.") and old.value != value else None
            settings[key] = Setting(value, source, replaced)
    return settings


def build(cls: type[T], settings: dict[str, Setting], where: str) -> T:
    """The dataclass of resolved `settings`; a check across fields (in `__post_init__`) names `where`."""
    try:
        return cls(**{k: s.value for k, s in settings.items()})
    except RlcscError as err:
        raise RlcscError(f"{where}: {err}") from None


def load_block(path: Path, block: str, cls: type[T], experiment: str | None = None) -> T:
    """Block `block` of the params file at `path`, with the experiment's and the budget's layers applied."""
    settings = resolve(read_params(path), path, block, cls, experiment)
    return build(cls, settings, f"{path}, {block}" + (f" of experiment {experiment}" if experiment else ""))


def overrides(settings: dict[str, Setting]) -> list[str]:
    """"key old -> new" for every value the budget replaced."""
    return [f"{k} {s.replaced[1]!r} -> {s.value!r}" for k, s in settings.items() if s.replaced]
