"""Stage parameters from `params.yaml`: each block becomes its stage's frozen dataclass.

A block's values come from up to three layers, in increasing precedence: the block itself (the
paper's protocol), the experiment's entry under `experiments` (block `train` only), and the active
budget's entry `budgets.<budget>.<block>`. Every value is checked where it stands, in whichever
layer and in every budget, active or not, for type and range; a bad one ends with one line naming
the layer, the key, the value and what is allowed. A budget may not set a key that an experiment
also sets (the experiment would silently lose it), nor a machine setting (`MACHINE`: where and in
which precision the arithmetic runs is not part of a protocol); `report.main` must name an
experiment. An experiment's name becomes part of DVC stage names, shell commands and folder names, so
it must match `NAME` and be none of `RESERVED`. `resolve` keeps the layer every value came from, which `rlcsc params`
prints and every stage announces where the budget replaced a block's value.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rlcsc.errors import RlcscError

T = TypeVar("T")

BUDGETED = ("augment", "patch", "train", "evaluate")  # the blocks a budget may change
TOP_LEVEL = ("budget", "budgets", "experiments", *BUDGETED, "report")
MACHINE = {"train": ("device", "precision", "compile"), "evaluate": ("precision",)}
# An experiment's name: a letter, then letters, digits, _ or - (no "." either: DVC reads the params
# key `experiments.<name>` as a path of keys).
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
# Names that match but are refused: what YAML 1.1 (PyYAML, which reads params.yaml here) reads as a
# boolean or null unquoted while DVC reads a string, and the folders of models/ and results/ that other
# stages write (the bicubic baseline and the released methods of dvc.yaml's `convert`). Compared in
# lower case, as a case-insensitive file system compares folder names.
RESERVED = ("y", "n", "yes", "no", "on", "off", "true", "false", "null", "bicubic", "vdsr")


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


def between(low: float, high: float) -> Rule:
    """low <= v <= high."""
    return Rule(lambda v: low <= v <= high, f"in [{low}, {high}]")


def one_of(*choices: Any) -> Rule:
    return Rule(lambda v: v in choices, "one of " + ", ".join(map(str, choices)))


def param(default: Any, rule: Rule | None = None) -> Any:
    """A dataclass field whose values (each element, for a list) must also satisfy `rule`."""
    if isinstance(default, list):
        default = tuple(default)
    return dataclasses.field(default=default, metadata={"rule": rule} if rule else {})


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _coerce(hint: Any, value: Any) -> Any:
    """`value` as type `hint` (int, float, bool, str, tuple[X, ...] of distinct items, X | None); ValueError if
    it is not."""
    if isinstance(hint, types.UnionType):
        if value is None and type(None) in hint.__args__:
            return None
        (hint,) = [a for a in hint.__args__ if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError
        items = tuple(_coerce(hint.__args__[0], v) for v in value)
        if len(set(items)) < len(items):  # a value twice would make (or score) the same data twice
            raise ValueError
        return items
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
        return f"a non-empty list of distinct items, each {_describe(hint.__args__[0], rule)}"
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
            object.__setattr__(self, f.name,
                               check_value(type(self), f.name, getattr(self, f.name), type(self).__name__))

    @classmethod
    def known(cls: type[T], block: dict) -> T:
        """A block (params.yaml's, or as a run wrote it in its `train.json` or checkpoint), the keys this code
        does not know (those of older code) left out."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in block.items() if k in names})


def _mapping(value: Any, where: str, what: str) -> dict:
    """`value` as a mapping (null reads as an empty one); a one-line error names `where` it stands otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RlcscError(f"{where} must be {what}, got {value!r}")
    return value


def check_layer(cls: type, data: Any, where: str) -> dict[str, Any]:
    """One layer of a block (a mapping of some of `cls`'s fields), every key and value checked."""
    data = _mapping(data, where, "a mapping of keys to values")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        raise RlcscError(f"unknown key(s) {unknown} in {where}; valid keys: {names}")
    return {k: check_value(cls, k, v, where) for k, v in data.items()}


def _check_budget(path: Path, name: Any, budget: Any) -> None:
    """Budget `name`: a mapping of stage blocks, each a mapping that sets no machine setting."""
    what = f"a mapping of stage blocks {list(BUDGETED)} to their overrides"
    blocks = _mapping(budget, f"{path}: budgets.{name}", what)
    unknown = sorted(set(blocks) - set(BUDGETED), key=str)
    if unknown:
        raise RlcscError(f"{path}: budgets.{name} must be {what}, got unknown block(s) {unknown}")
    for block, values in blocks.items():
        keys = _mapping(values, f"{path}: budgets.{name}.{block}", "a mapping of keys to values")
        machine = sorted(set(keys) & set(MACHINE.get(block, ())))
        if machine:
            raise RlcscError(f"{path}: budgets.{name}.{block} sets {machine}, which say where and in which "
                             f"precision the arithmetic runs, not what it computes; set them in `{block}`")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML would keep the last
    silently; DVC refuses the file)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # refused by YAML itself, or `<<`, which may repeat
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"found duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_params(path: Path) -> dict:
    """The whole params file as a mapping, its structure checked: blocks, experiments, budgets and `budget`."""
    if path.exists() and not path.is_file():  # a FIFO or a device would never end
        raise RlcscError(f"params file {path} is not a regular file")
    try:
        params = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except OSError as err:
        raise RlcscError(f"cannot read params file {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise RlcscError(f"params file {path} is not UTF-8 text (byte {err.object[err.start]:#04x} "
                         f"at offset {err.start})") from None
    except yaml.YAMLError as err:
        raise RlcscError(f"params file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    params = _mapping(params, f"params file {path}", "a mapping of blocks")
    unknown = sorted(set(params) - set(TOP_LEVEL), key=str)
    if unknown:
        raise RlcscError(f"unknown block(s) {unknown} in {path}; valid blocks: {list(TOP_LEVEL)}")
    for block in (*BUDGETED, "report"):
        _mapping(params.get(block), f"{path}: {block}", "a mapping of keys to values")
    experiments = _mapping(params.get("experiments"), f"{path}: experiments", "a mapping of names to train values")
    for name, values in experiments.items():
        check_name(name, path, experiments)
        _mapping(values, f"{path}: experiments.{name}", "a mapping of train keys to values")
    budgets = _mapping(params.get("budgets"), f"{path}: budgets", "a mapping of names to stage blocks")
    for name, budget in budgets.items():
        _check_budget(path, name, budget)
    budget_name(params, path)
    return params


def check_name(name: Any, path: Path, experiments: dict) -> None:
    """An experiment's name matches `NAME` and is not `RESERVED`, and no earlier name of `experiments`
    differs from it in letter case alone (on a case-insensitive file system their folders are one)."""
    if not (isinstance(name, str) and NAME.fullmatch(name)) or name.lower() in RESERVED:
        raise RlcscError(f"{path}: experiment name {name!r} is not allowed; a name is a letter, then letters, "
                         f"digits, _ or -, and none of {list(RESERVED)} in any case (see README, \"Parameters, "
                         "budgets and experiments\")")
    twin = next(n for n in experiments if str(n).lower() == name.lower())
    if twin != name:
        raise RlcscError(f"{path}: experiment names {twin!r} and {name!r} differ in letter case alone; their "
                         "folders would be one on a case-insensitive file system")


def budget_name(params: dict, path: Path) -> str | None:
    """The active budget (None when the file names none), which must name an entry of `budgets`."""
    budget, budgets = params.get("budget"), params.get("budgets") or {}
    if budget is not None and not (isinstance(budget, str) and budget in budgets):
        raise RlcscError(f"{path}: budget = {budget!r} is not allowed; it must name an entry of `budgets`: "
                         f"{sorted(budgets, key=str)}")
    return budget


@dataclass(frozen=True)
class Setting:
    """One resolved value, the layer it came from, and the value it replaced there (if any)."""

    value: Any
    source: str  # "default", the block name, "experiments.<e>" or "budgets.<b>.<block>"
    replaced: tuple[str, Any] | None = None  # (source, value) a budget overrode


def budget_layers(params: dict, path: Path, block: str, cls: type) -> dict[str, dict[str, Any]]:
    """Block `block` of every budget, active or not, checked: a typo is found before someone switches to it."""
    if block not in BUDGETED:
        return {}
    return {name: check_layer(cls, (blocks or {}).get(block), f"{path}, budgets.{name}.{block}")
            for name, blocks in (params.get("budgets") or {}).items()}


def experiment_layer(params: dict, path: Path, cls: type, experiment: str) -> dict[str, Any]:
    """The entry `experiment` of `experiments`, checked."""
    experiments = params.get("experiments") or {}
    if experiment not in experiments:
        raise RlcscError(f"unknown experiment {experiment!r} in {path}; defined: {sorted(experiments, key=str)}")
    return check_layer(cls, experiments[experiment], f"{path}, experiments.{experiment}")


def check_main(params: dict, path: Path, main: Setting) -> None:
    """`report.main` (or its default) must name an entry of `experiments`, of which there is at least one."""
    experiments = params.get("experiments") or {}
    if not experiments:
        raise RlcscError(f"{path} defines no experiment: `experiments` names each network the pipeline trains, "
                         "report.main the one its pages show as RL-CSC (see README, \"Parameters, budgets and "
                         "experiments\")")
    if main.value not in experiments:
        given = "" if main.source == "report" else " (its default)"
        raise RlcscError(f"{path}, report: main = {main.value!r}{given} is not allowed; it must name an entry of "
                         f"`experiments`: {sorted(experiments, key=str)}")


def resolve(params: dict, path: Path, block: str, cls: type, experiment: str | None = None) -> dict[str, Setting]:
    """Every field of `cls` for `block`, with the layer it came from (see the module docstring)."""
    layers = {block: check_layer(cls, params.get(block), f"{path}, {block}")}
    budgets = budget_layers(params, path, block, cls)
    if experiment is not None:
        values = experiment_layer(params, path, cls, experiment)
        layers[f"experiments.{experiment}"] = values
        for name, budget_values in budgets.items():
            both = sorted(set(values) & set(budget_values))
            if both:
                raise RlcscError(f"{path}: experiments.{experiment} and budgets.{name}.{block} both set {both}; "
                                 "a budget may not change what an experiment is")
    budget = budget_name(params, path) if block in BUDGETED else None
    if budget is not None:
        layers[f"budgets.{budget}.{block}"] = budgets[budget]
    settings = {f.name: Setting(getattr(cls(), f.name), "default") for f in dataclasses.fields(cls)}
    for source, values in layers.items():
        for key, value in values.items():
            old = settings[key]
            replaced = (old.source, old.value) if source.startswith("budgets.") and old.value != value else None
            settings[key] = Setting(value, source, replaced)
    if block == "report":
        check_main(params, path, settings["main"])
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
