"""dvc.yaml's dependencies are complete by construction: every stage depends on every module its
command imports (its import closure inside rlcsc/, notebooks included) and on nothing else of the
package, and on the values it reads, as check_params resolved them (RESOLVED)."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from rlcsc.evaluate import EvaluateParams
from rlcsc.provenance import closure, imported

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "rlcsc"
RESOLVED = "data/resolved.json"  # check_params' output: every value each stage resolves
# The values each stage command reads: its block (an experiment's entry of `train`) and single keys of other
# blocks (`train` reads `evaluate.precision` for its Set5 x3 monitor); bicubic runs no network, so not its precision.
READS = {"augment": ["augment"], "patch": ["patch"], "train": ["train.{experiment}", "evaluate.precision"],
         "evaluate": ["evaluate"],
         "bicubic": [f"evaluate.{f.name}" for f in dataclasses.fields(EvaluateParams) if f.name != "precision"]}


def notebook_reads(source: str) -> set[str]:
    """The params a report notebook of code `source` reads (`rlcsc.report.Page`, `rlcsc.scorecard.costs`): the
    main experiment and every experiment's name (`report.page`); the whole report block for its tolerances; the
    train block for the main network (`main_network`, under `main_runs` and `sweep_runs`); and for each
    `costs(page, budget)` (the paper's by default) the train block and the budget's layers it resolves for each
    experiment."""
    reads = {"report.main", "experiments"}
    if "tolerance()" in source:
        reads.add("report")
    if re.search(r"\b(main_runs|sweep_runs|main_network)\(", source):
        reads.add("train")
    for budget in re.findall(r"\bcosts\(page(?:, \"(\w+)\")?\)", source):
        reads |= {"train", f"budgets.{budget or 'paper'}"}
    return reads - {"report.main"} if "report" in reads else reads


def holds_code(path: Path) -> bool:
    """False for a package `__init__.py` that holds only a docstring and constants."""
    body = ast.parse(path.read_text()).body
    return any(not isinstance(node, (ast.Expr, ast.Assign)) for node in body)


def handler_imports(command: str) -> set[str]:
    """The modules that `rlcsc <command>`'s handler in cli.py imports, through the cli helpers it calls."""
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    found, todo, seen = set(), [f"_{command}"], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        found |= imported(functions[name])
        todo += [n.func.id for n in ast.walk(functions[name])
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    return found


def notebook_imports(path: Path) -> set[str]:
    cells = json.loads(path.read_text())["cells"]
    return imported(ast.parse("\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")))


def stages() -> list[tuple[str, dict]]:
    """Every stage of dvc.yaml, `foreach` expanded over its items (the experiments in params.yaml, or
    the mapping written in dvc.yaml)."""
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    experiments = yaml.safe_load((REPO / "params.yaml").read_text())["experiments"]
    out = []
    for name, stage in pipeline.items():
        if "foreach" in stage:
            items = stage["foreach"] if isinstance(stage["foreach"], dict) else experiments
            for key, item in items.items():
                text = json.dumps(stage["do"]).replace("${key}", key)
                for field, value in (item or {}).items():
                    text = text.replace(f"${{item.{field}}}", str(value))
                out.append((f"{name}@{key}", json.loads(text)))
        else:
            out.append((name, stage))
    return out


def rlcsc_command(stage: dict) -> list[str] | None:
    words = shlex.split(stage["cmd"])
    return words if words[0] == "rlcsc" else None


@pytest.mark.parametrize("name,stage", stages(), ids=[n for n, _ in stages()])
def test_every_stage_depends_on_exactly_the_code_it_runs(name: str, stage: dict) -> None:
    words = rlcsc_command(stage)
    code = {Path(d) for d in stage.get("deps", []) if str(d).startswith("rlcsc")}
    if words is None:
        assert not code, f"{name} runs no rlcsc code but depends on {sorted(map(str, code))}"
        return
    modules = handler_imports(words[1]) | {"rlcsc.cli"}
    if words[1] == "report":
        notebook = REPO / "notebooks" / f"{words[2]}.ipynb"
        assert Path("notebooks") / notebook.name in {Path(d) for d in stage["deps"]}
        modules |= notebook_imports(notebook)
    needed = {p.relative_to(REPO) for p in closure(modules, frozenset({"rlcsc.cli"})) if holds_code(p)}
    if "rlcsc.reference" in modules or any("rlcsc/reference" in str(p) for p in needed):
        needed.add(Path("rlcsc/reference"))  # the CSV tables it reads
    if "rlcsc.manifest" in modules or Path("rlcsc/manifest.py") in needed:
        needed.add(Path("rlcsc/manifest.tsv"))
    if "--weights" in words and words[1] == "download" or Path("rlcsc/released.py") in needed:
        needed.add(Path("rlcsc/weights.tsv"))  # the manifest of the released model files

    def covered(path: Path) -> bool:
        return any(path == dep or dep in path.parents for dep in code)

    missing = sorted(str(p) for p in needed if not covered(p))
    assert not missing, f"{name} imports {missing} but does not depend on them"
    extra = sorted(str(d) for d in code if not any(d == p or d in p.parents for p in needed))
    assert not extra, f"{name} depends on {extra}, which its command does not import"


def params_of(stage: dict) -> tuple[list[str], set[str]]:
    """A stage's params: the keys of RESOLVED it lists (in order), and those of params.yaml."""
    params = stage.get("params", [])
    resolved = [key for entry in params if isinstance(entry, dict) for key in entry[RESOLVED]]
    return resolved, {entry for entry in params if isinstance(entry, str)}


@pytest.mark.parametrize("name,stage", stages(), ids=[n for n, _ in stages()])
def test_every_stage_lists_the_values_it_reads_as_check_params_resolved_them(name: str, stage: dict) -> None:
    """A budget's layer reaches a stage only through RESOLVED: a switch of budget, or an edit of one not in use,
    reruns only the stages whose values it changes."""
    words = rlcsc_command(stage) or ["", ""]
    reads, plain = READS.get(words[1], []), set()
    if words[1] == "evaluate":
        reads = READS["bicubic"] if "--method" in words else READS["evaluate"] if "--params" in words else []
    if words[1] == "train":
        reads = [r.format(experiment=words[words.index("--experiment") + 1]) for r in reads]
    if words[1] == "report":
        cells = json.loads((REPO / "notebooks" / f"{words[2]}.ipynb").read_text())["cells"]
        plain = notebook_reads("\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code"))
        reads = sorted(plain & {"report", "report.main"})  # as resolved: its defaults where params.yaml sets none
        plain -= set(reads)
    assert params_of(stage) == (reads, plain)


def test_every_notebook_has_a_stage_and_a_page() -> None:
    names = {p.stem for p in (REPO / "notebooks").glob("*.ipynb")}
    stage_names = {n.removeprefix("notebook_") for n, _ in stages() if n.startswith("notebook_")}
    toc = (REPO / "book" / "_toc.yml").read_text()
    assert names == stage_names
    assert all(f"generated/{n}" in toc for n in names)


def test_every_stage_that_reads_params_yaml_runs_after_its_check() -> None:
    """DVC removes a stage's outputs before its command runs: a bad value must stop `dvc repro` at
    check_params, which reads the whole file, before any stage that reads it has lost anything. A stage that
    lists values of check_params' output runs after it."""
    for name, stage in stages():
        words = rlcsc_command(stage)
        if words and "--params" in words and name != "check_params":
            assert params_of(stage)[0], name
    check = dict(stages())["check_params"]
    assert "params.yaml" in check["deps"] and check["outs"] == [RESOLVED]
    assert shlex.split(check["cmd"])[-2:] == ["--resolved", RESOLVED]


def test_every_value_dvc_puts_into_a_command_is_quoted() -> None:
    """An experiment's name (a key of params.yaml) reaches the shell only as one quoted word."""
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    commands = [s["do"]["cmd"] for s in pipeline.values() if "foreach" in s]
    assert commands and all(re.fullmatch(r"'[^' ]*\$\{[^' ]*'", w) for c in commands for w in c.split() if "${" in w)


def test_no_experiment_may_take_the_folder_of_another_stage_s_output() -> None:
    """`bicubic` and the released methods write results/<name> (and models/<name>), as an experiment would."""
    from rlcsc.config import RESERVED

    released = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["convert"]["foreach"]
    weights = [line.split("\t")[0] for line in (PACKAGE / "weights.tsv").read_text().splitlines()[1:]]
    assert {"bicubic", *released, *weights} <= {n for n in RESERVED} | {n.upper() for n in RESERVED}


def reads_test_images(stage: dict) -> bool:
    """Whether a stage's command reads the test images: one that scores (it imports rlcsc/evaluate.py) and is given
    them, or a notebook whose code (past its parameters) uses `raw`."""
    words = rlcsc_command(stage) or []
    if words[1:2] == ["report"]:
        cells = json.loads((REPO / "notebooks" / f"{words[2]}.ipynb").read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", [])]
        return any(re.search(r"\braw\b", "".join(c["source"])) for c in code)
    return "--raw" in words and "rlcsc/evaluate.py" in stage["deps"]


def test_every_stage_that_reads_the_test_images_depends_on_them_and_no_other() -> None:
    """A test image replaced since makes DVC rerun `download` (which fetches it again) before these
    stages, rather than call them up to date; the images' folder is `download`'s output."""
    from rlcsc.manifest import TEST_SETS

    images = {f"data/raw/{d}" for d in TEST_SETS}
    readers = [name for name, stage in stages() if reads_test_images(stage)]
    assert {n.split("@")[0] for n in readers} >= {"evaluate_bicubic", "evaluate", "train", "notebook_table3",
                                                  "notebook_figures4_6"}
    for name, stage in stages():
        assert images & set(stage.get("deps", [])) == (images if name in readers else set()), name
    download = dict(stages())["download"]
    assert {"data/raw": {"cache": False, "persist": True}} in download["outs"]


def test_dvc_plots_show_each_experiment_s_curve_as_its_stage_is_made() -> None:
    """`dvc plots show` draws the Set5 x3 curve of every experiment, a new one too: each train stage declares its
    train.json a plot, rather than a list of experiments in dvc.yaml that a new one would be missing from."""
    trains = [(name, stage) for name, stage in stages() if name.startswith("train@")]
    assert len(trains) == len(yaml.safe_load((REPO / "params.yaml").read_text())["experiments"])
    for name, stage in trains:
        ((path, plot),) = (item for entry in stage["plots"] for item in entry.items())
        assert path == f"models/{name.split('@')[1]}/train.json" and (plot["x"], plot["y"]) == ("step", "psnr")
    assert "plots" not in yaml.safe_load((REPO / "dvc.yaml").read_text())
