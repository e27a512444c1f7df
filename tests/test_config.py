"""params.yaml: every value checked wherever it stands, budgets that cannot change what an
experiment is, and overrides that are announced and listed with their source."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from rlcsc.cli import main
from rlcsc.config import load_block, overrides, read_params, resolve
from rlcsc.errors import RlcscError
from rlcsc.train import TrainParams

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def write(tmp_path: Path, edit) -> Path:
    """A copy of the project's params.yaml with `edit(params)` applied."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize("where,key,value,allowed", [
    ("experiment", "recursions", 0, "an integer in [1, 1000]"),
    ("experiment", "recursions", -3, "an integer in [1, 1000]"),
    ("experiment", "recursions", "abc", "an integer in [1, 1000]"),
    ("experiment", "recursions", 2.5, "an integer in [1, 1000]"),
    ("experiment", "recursions", 1000000000, "an integer in [1, 1000]"),  # would never end a step
    ("block", "seed", 18446744073709551616, "an integer in [0, 4294967296)"),  # beyond what torch seeds
    ("block", "lr", -1, "a number > 0"),
    ("budget", "lr", 0, "a number > 0"),
    ("budget", "batch", 0, "an integer in [1, 8192]"),
    ("budget", "batch", 1000000, "an integer in [1, 8192]"),
    ("block", "momentum", 1.0, "a number in [0, 1)"),
    ("block", "weight_decay", -0.1, "a number >= 0"),
    ("block", "epochs", 0, "an integer >= 1"),
    ("block", "clip", 0, "null or a number > 0"),
    ("block", "residual", "yes", "true or false"),
    ("block", "precision", "fp16", "one of bf16, tf32, fp32"),
    ("experiment", "features", 0, "an integer in [1, 4096]"),
    ("experiment", "codes", -1, "an integer in [1, 4096]"),
    ("block", "batch", True, "an integer in [1, 8192]"),  # YAML's true is no integer, though Python's is 1
    ("block", "lr", float("inf"), "a number > 0"),
    ("budget", "weight_decay", float("nan"), "a number >= 0"),
])
def test_a_bad_value_anywhere_gives_one_line_naming_layer_key_value_and_what_is_allowed(
        tmp_path: Path, where: str, key: str, value, allowed: str, one_line_error: Callable[[list[str]], str]) -> None:
    def edit(params: dict) -> None:
        if where == "block":
            params["train"][key] = value
        elif where == "budget":
            params["budgets"]["quick"]["train"][key] = value
        else:
            params["experiments"]["K25"][key] = value
    layer = {"block": "train", "budget": "budgets.quick.train", "experiment": "experiments.K25"}[where]
    line = one_line_error(["params", "--params", str(write(tmp_path, edit))])
    assert f"{layer}: {key} = {value!r} is not allowed; it must be {allowed}" in line


def test_a_value_the_budget_overrides_is_still_checked(tmp_path: Path) -> None:
    path = write(tmp_path, lambda p: p["train"].update(lr="fast"))  # replaced by budgets.quick
    with pytest.raises(RlcscError, match=r"train: lr = 'fast' is not allowed"):
        load_block(path, "train", TrainParams, "K25")


def test_evaluate_and_data_blocks_are_checked_too(tmp_path: Path, one_line_error: Callable[[list[str]], str]) -> None:
    cases = [(lambda p: p["evaluate"].update(scales=[5]),
              "scales = [5] is not allowed; it must be a non-empty list of distinct items, each one of 2, 3, 4"),
             (lambda p: p["budgets"]["quick"]["evaluate"].update(datasets=["Set6"]),
              "budgets.quick.evaluate: datasets = ['Set6']"),
             (lambda p: p["augment"].update(factors=[1.5]), "each a number in (0, 1]"),
             # a value twice would augment, cut or score the same data twice
             (lambda p: p["augment"].update(rotations=[0, 90, 0]), "rotations = [0, 90, 0] is not allowed"),
             (lambda p: p["augment"].update(factors=[1, 1.0]), "factors = [1, 1.0] is not allowed"),
             (lambda p: p["patch"].update(scales=[3, 3]), "scales = [3, 3] is not allowed"),
             (lambda p: p["evaluate"].update(datasets=["Set5", "Set5"]), "datasets = ['Set5', 'Set5'] is not allowed"),
             (lambda p: p["patch"].update(size=0), "size = 0 is not allowed; it must be an integer >= 1")]
    for edit, message in cases:
        assert message in one_line_error(["params", "--params", str(write(tmp_path, edit))])


def test_a_budget_may_not_change_what_an_experiment_is(tmp_path: Path,
                                                       one_line_error: Callable[[list[str]], str]) -> None:
    path = write(tmp_path, lambda p: p["budgets"]["quick"]["train"].update(recursions=5))
    line = one_line_error(["params", "--params", str(path)])
    assert "and budgets.quick.train both set ['recursions']; a budget may not change what an experiment is" in line
    machine = write(tmp_path, lambda p: p["budgets"]["quick"]["train"].update(precision="fp32"))
    assert "budgets.quick.train sets ['precision']" in one_line_error(["params", "--params", str(machine)])


def test_unknown_blocks_keys_budgets_and_yaml_errors_are_one_line(tmp_path: Path,
                                                                  one_line_error: Callable[[list[str]], str]) -> None:
    cases = [(lambda p: p.update(evalute={"ifc": False}), "unknown block(s) ['evalute']"),
             (lambda p: p["train"].update(learning_rate=0.1), "unknown key(s) ['learning_rate'] in"),
             (lambda p: p.update(budget="huge"), "budget = 'huge' is not allowed; it must name an entry of `budgets`"),
             (lambda p: p["budgets"]["quick"].update(report={}), "budgets.quick must be a mapping of stage blocks ["
              "'augment', 'patch', 'train', 'evaluate'] to their overrides, got unknown block(s) ['report']")]
    for edit, message in cases:
        assert message in one_line_error(["params", "--params", str(write(tmp_path, edit))])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [\n")
    assert "is not valid YAML" in one_line_error(["params", "--params", str(bad)])


def test_a_file_that_is_not_utf8_text_is_one_line(tmp_path: Path, one_line_error: Callable[[list[str]], str]) -> None:
    binary = tmp_path / "params.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    line = one_line_error(["params", "--params", str(binary)])
    assert line.endswith(f"params file {binary} is not UTF-8 text (byte 0x89 at offset 0)")


@pytest.mark.parametrize("edit,message", [
    (lambda p: p.update(budget=["quick"]),
     "budget = ['quick'] is not allowed; it must name an entry of `budgets`: ['fast', 'paper', 'quick']"),
    (lambda p: p.update(budgets=["quick"]), "budgets must be a mapping of names to stage blocks, got ['quick']"),
    (lambda p: p["budgets"].update(quick=["train"]), "budgets.quick must be a mapping of stage blocks"),
    (lambda p: p["budgets"]["quick"].update(patch=5), "budgets.quick.patch must be a mapping of keys to values, got 5"),
    (lambda p: p.update(experiments=["K25"]), "experiments must be a mapping of names to train values, got ['K25']"),
    (lambda p: p["experiments"].update(K25=25), "experiments.K25 must be a mapping of train keys to values, got 25"),
    (lambda p: p.update(report="K25"), "report must be a mapping of keys to values, got 'K25'"),
    (lambda p: p.update({1: "x", "foo": "y"}), "unknown block(s) [1, 'foo'] in"),
])
def test_a_file_of_the_wrong_shape_is_one_line_naming_where(tmp_path: Path, edit, message: str,
                                                            one_line_error: Callable[[list[str]], str]) -> None:
    path = write(tmp_path, edit)
    for argv in (["params", "--params", str(path)],
                 ["train", "--params", str(path), "--experiment", "K25", "--out", str(tmp_path / "o")]):
        assert message in one_line_error(argv)


def test_report_main_must_name_an_experiment(tmp_path: Path, one_line_error: Callable[[list[str]], str]) -> None:
    path = write(tmp_path, lambda p: p["report"].update(main="K99"))
    line = one_line_error(["params", "--params", str(path)])
    assert "report: main = 'K99' is not allowed; it must name an entry of `experiments`: ['K15', " in line
    argv = ["report", "table1", "--params", str(path), "--out", str(tmp_path / "o")]
    assert "report: main = 'K99' is not allowed" in one_line_error(argv)
    assert not (tmp_path / "o").exists()
    path = write(tmp_path, lambda p: (p["report"].pop("main"), p["experiments"].pop("K25")))
    assert "report: main = 'K25' (its default) is not allowed; it must name an entry of `experiments`: " in (
        one_line_error(["params", "--params", str(path)]))
    for text in ("", "budget:\n"):  # a file that holds no experiment
        path.write_text(text)
        assert one_line_error(["params", "--params", str(path)]).endswith(
            f"{path} defines no experiment: `experiments` names each network the pipeline trains, report.main the "
            "one its pages show as RL-CSC (see README, \"Parameters, budgets and experiments\")")


@pytest.mark.parametrize("edit,message", [
    (lambda p: p["budgets"]["paper"].update(train={"lr": "x"}),
     "budgets.paper.train: lr = 'x' is not allowed; it must be a number > 0"),
    (lambda p: p["budgets"]["fast"]["train"].update(bogus=1), "unknown key(s) ['bogus'] in"),
    (lambda p: p["budgets"]["paper"].update(evaluate={"scales": [5]}), "budgets.paper.evaluate: scales = [5]"),
    (lambda p: p["budgets"]["fast"]["train"].update(recursions=5),
     "and budgets.fast.train both set ['recursions']"),
])
def test_a_budget_that_is_not_active_is_checked_too(tmp_path: Path, edit, message: str,
                                                    one_line_error: Callable[[list[str]], str]) -> None:
    path = write(tmp_path, edit)
    assert yaml.safe_load(path.read_text())["budget"] == "quick"
    assert message in one_line_error(["params", "--params", str(path)])


def test_yaml_numbers_without_a_dot_and_null_clip_are_read_as_meant(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train: {lr: 1e-3, weight_decay: 1e-4, clip: null}\nexperiments: {a: {}}\n")
    p = load_block(path, "train", TrainParams, "a")
    assert p.lr == 0.001 and p.weight_decay == 0.0001 and p.clip is None


def test_params_lists_every_value_with_its_source(capsys) -> None:
    assert main(["params", "--params", str(REPO / "params.yaml")]) == 0
    out = capsys.readouterr().out
    train = out[out.index("train@K25\n"):out.index("\n\n", out.index("train@K25\n"))]
    rows = {line.split()[0]: line.split(maxsplit=2)[1:] for line in train.splitlines()[1:]}
    assert rows["recursions"] == ["25", "experiments.K25"]
    assert rows["lr"][0] == "0.01" and rows["lr"][1].startswith("budgets.quick.train  (replaces train: 0.1)")
    assert rows["momentum"] == ["0.9", "train"] and rows["units"] == ["9", "default"]
    assert set(rows) == set(TrainParams.__dataclass_fields__)
    for experiment in PARAMS["experiments"]:
        assert f"train@{experiment}\n" in out


def test_no_traceback_reaches_the_user_from_a_bad_value(tmp_path: Path) -> None:
    path = write(tmp_path, lambda p: p["experiments"]["K25"].update(recursions="abc"))
    cmd = [sys.executable, "-m", "rlcsc.cli", "train", "--params", str(path), "--experiment", "K25", "--out",
           str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"rlcsc train: error: {path}, experiments.K25: recursions = 'abc' "
                                                "is not allowed; it must be an integer in [1, 1000]"]


@pytest.mark.parametrize("width,message", [
    (1e-300, "width = 1e-300 is not allowed with features = 128: it makes 0 features, and must make from 1 to 4096"),
    (24, "width = 24.0 is not allowed with codes = 256: it makes 6144 codes, and must make from 1 to 4096"),
])
def test_a_width_that_leaves_no_feature_or_too_many_is_refused(tmp_path: Path, width: float,
                                                               message: str,
        one_line_error: Callable[[list[str]], str]) -> None:
    path = write(tmp_path, lambda p: p.update(budget="paper") or p["train"].update(width=width))
    line = one_line_error(["train", "--params", str(path), "--experiment", "K25", "--out", str(tmp_path / "m")])
    assert line == f"rlcsc train: error: {path}, train of experiment K25: TrainParams: {message}"
    assert not (tmp_path / "m").exists()
    # under the quick budget, whose width replaces it: refused by the check of the others (first in the file: fast)
    path = write(tmp_path, lambda p: p.update(budget="quick") or p["train"].update(width=width))
    line = one_line_error(["params", "--params", str(path)])
    assert line == f"rlcsc params: error: {path}, train@K15 under budget fast: TrainParams: {message}"


def test_a_key_given_twice_is_refused(tmp_path: Path, one_line_error: Callable[[list[str]], str]) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text().replace("  K25: {recursions: 25}\n",
                                                                "  K25: {recursions: 25}\n  K25: {recursions: 30}\n"))
    line = one_line_error(["params", "--params", str(path)])
    assert line.startswith(f"rlcsc params: error: params file {path} is not valid YAML: found duplicate key 'K25'")
    number = path.read_text().splitlines().index("  K25: {recursions: 30}") + 1
    assert f", line {number}, column 3: K25: {{recursions: 30}}" in line


def test_a_stage_announces_the_values_its_budget_replaced(mirror: Path, tmp_path: Path) -> None:
    path = write(tmp_path, lambda p: p["evaluate"].update(ifc=False))
    argv = ["evaluate", "--method", "bicubic", "--params", str(path), "--raw", str(mirror), "--out",
            str(tmp_path / "o"), "--scales", "3", "--jobs", "1"]
    proc = subprocess.run([sys.executable, "-m", "rlcsc.cli", *argv], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "replaces" in line]
    assert notes == ["rlcsc evaluate: budget quick replaces evaluate values datasets ('Set5', 'Set14', 'BSD100', "
                     "'Urban100') -> ('Set5', 'Set14') (`rlcsc params` lists every value and where it comes from)"]
    record = yaml.safe_load((tmp_path / "o" / "evaluation.json").read_text())
    assert record["datasets"] == ["Set5", "Set14"] and record["ifc"] is False and record["budget"] == "quick"
    assert "precision" not in record  # bicubic runs no network (dvc.yaml's evaluate_bicubic does not depend on it)


@pytest.mark.parametrize("name", ["$(touch pwned)", "a;touch pwned", "K25'", "models/K25", "..", "K25 x", "train@K25",
                                  "K2.5", "_K25", "25", "bicubic", "VDSR", "null", "Yes", "off"])
def test_an_experiment_name_that_could_reach_a_shell_or_another_output_is_refused(
        tmp_path: Path, name: str, one_line_error: Callable[[list[str]], str]) -> None:
    """Names become stage names, shell words and folders: K25_seed1 and K25-fast are fine; a name that
    holds anything else, reads as a YAML boolean or null, or takes another stage's folder is refused by
    every command that reads params.yaml."""
    path = write(tmp_path, lambda p: p["experiments"].update({name: {"recursions": 5}}))
    for argv in (["params", "--params", str(path)], ["augment", "--params", str(path), "--out", str(tmp_path / "a")],
                 ["train", "--params", str(path), "--experiment", "K25", "--out", str(tmp_path / "o")]):
        assert f"experiment name {name!r} is not allowed; a name is a letter, then " in one_line_error(argv)
    assert not (tmp_path / "a").exists() and not (tmp_path / "o").exists()


def test_an_unquoted_yaml_boolean_as_a_name_is_refused(tmp_path: Path,
                                                       one_line_error: Callable[[list[str]], str]) -> None:
    """PyYAML reads `yes:` as true, DVC as the string "yes": such a name means two things."""
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text().replace("  K25: {recursions: 25}\n",
                                                                "  K25: {recursions: 25}\n  yes: {recursions: 5}\n"))
    assert "experiment name True is not allowed" in one_line_error(["params", "--params", str(path)])


def test_two_names_that_differ_in_case_alone_are_refused(tmp_path: Path,
                                                         one_line_error: Callable[[list[str]], str]) -> None:
    path = write(tmp_path, lambda p: p["experiments"].update({"k25": {"recursions": 5}}))
    assert "experiment names 'K25' and 'k25' differ in letter case alone" in one_line_error(
        ["params", "--params", str(path)])


def test_names_of_letters_digits_underscores_and_hyphens_are_kept(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, lambda p: p["experiments"].update({"K25-fast_2": {"recursions": 5}, "Nope": {}}))
    assert main(["params", "--params", str(path)]) == 0
    assert "train@K25-fast_2\n" in capsys.readouterr().out


def test_the_check_stage_writes_every_value_each_stage_resolves(tmp_path: Path) -> None:
    """`rlcsc params --resolved` (check_params) writes the values dvc.yaml's stages depend on: each block with the
    budget's layer over it, `train` for each experiment with its entry over that, and the defaults where no layer
    sets a value. A budget need not hold every block, and a file may name none."""
    def mine(p: dict) -> None:
        p["budgets"]["mine"] = {"train": {"lr": 0.01}}
        p["budget"] = "mine"
        p["experiments"]["K48"]["seed"] = 7
        p["evaluate"].pop("precision")

    out = tmp_path / "resolved.json"
    path = write(tmp_path, mine)
    assert main(["params", "--params", str(path), "--resolved", str(out)]) == 0
    resolved = json.loads(out.read_text())
    assert list(resolved) == ["augment", "patch", "train", "evaluate", "report"]
    assert list(resolved["train"]) == list(read_params(path)["experiments"])
    assert resolved["train"]["K48"] == {**resolved["train"]["K25"], "recursions": 48, "seed": 7}
    assert resolved["train"]["K25"]["lr"] == 0.01 and resolved["train"]["K25"]["momentum"] == 0.9
    assert resolved["evaluate"] == {"datasets": ["Set5", "Set14", "BSD100", "Urban100"], "scales": [2, 3, 4],
                                    "ifc": True, "precision": "tf32"}
    path = write(tmp_path, lambda p: (p.pop("budget"), p.pop("budgets")))
    assert main(["params", "--params", str(path), "--resolved", str(out)]) == 0
    assert json.loads(out.read_text())["train"]["K25"]["lr"] == 0.1


def test_a_file_without_a_budget_says_so(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, lambda p: p.update(budget=None))
    assert main(["params", "--params", str(path)]) == 0
    assert capsys.readouterr().out.startswith("budget: none (every block as written)\n")


def test_the_resolved_values_go_to_a_file_not_a_folder(tmp_path: Path, capsys) -> None:
    """A folder given to --resolved is one line before any check, as for every command that writes one result."""
    assert main(["params", "--params", str(REPO / "params.yaml"), "--resolved", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"rlcsc params: error: {tmp_path} is a folder; name the file the result goes to\n"


def test_the_ends_of_a_closed_range_are_allowed() -> None:
    for value in (1, 1000):
        assert TrainParams(recursions=value).recursions == value
    assert TrainParams(batch=1).batch == 1 and TrainParams(batch=8192).batch == 8192


def test_a_budget_value_equal_to_the_blocks_replaces_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, lambda p: p["train"].update(batch=p["budgets"]["quick"]["train"]["batch"]))
    settings = resolve(read_params(path), path, "train", TrainParams, "K25")
    assert settings["batch"].replaced is None and not any(line.startswith("batch ") for line in overrides(settings))
    assert settings["lr"].replaced == ("train", 0.1)  # a different value is announced
