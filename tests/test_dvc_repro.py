"""`dvc repro`, `dvc exp run` and `dvc status` after an edit of params.yaml, on a miniature workspace: this project's
dvc.yaml (the stages STAGES) and params.yaml (with two of its experiments) over stand-in files that `dvc commit`
records as built. A bad value stops at check_params, before DVC removes any output; an experiment's name reaches
the shell only quoted; a switch of budget makes stale only the stages whose values it changes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlcsc.manifest import TEST_SETS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ("check_params", "augment", "patch", "evaluate_bicubic", "train", "evaluate")
TYPO = ("K25: {recursions: 25}", "K25: {recursions: abc}")


def run(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(args, cwd=workspace, capture_output=True, text=True, env=env, check=False)


def snapshot(workspace: Path) -> dict[str, bytes]:
    """Every file of the runs' folders (models/, results/) with its bytes."""
    folders = [workspace / "models", workspace / "results"]
    return {str(p.relative_to(workspace)): p.read_bytes() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


def check(workspace: Path) -> None:
    """What check_params writes, from the workspace's params.yaml."""
    proc = run(workspace, "rlcsc", "params", "--params", "params.yaml", "--resolved", "data/resolved.json")
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git and DVC repository with this project's params.yaml (experiments K25 and K48), the stages
    STAGES of its dvc.yaml and their code, and a stand-in for every dependency and output, committed by
    DVC as built."""
    root = tmp_path_factory.mktemp("dvc") / "ws"
    shutil.copytree(REPO / "rlcsc", root / "rlcsc", ignore=shutil.ignore_patterns("__pycache__"))
    params = (REPO / "params.yaml").read_text()  # but two experiments, the fewer stages for DVC to hash
    start, end = params.index("\nexperiments:\n"), params.index("\n\n", params.index("\nexperiments:\n"))
    (root / "params.yaml").write_text(params[:start] + "\nexperiments:\n  K25: {recursions: 25}\n"
                                      "  K48: {recursions: 48}" + params[end:])
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {s: stages[s] for s in STAGES}}, sort_keys=False))
    experiments = yaml.safe_load((root / "params.yaml").read_text())["experiments"]
    assert list(experiments) == ["K25", "K48"]
    files = ["data/raw.json", "data/augmented/keep.png", "data/patches/keep.npy",
             *(f"data/raw/{d}/1.png" for d in TEST_SETS),
             *(f"results/bicubic/{n}" for n in ("per_image.csv", "evaluation.json", "metrics.json"))]
    for e in experiments:
        files += [f"models/{e}/{n}" for n in ("model.pt", "checkpoint.pt", "train.json", "train_metrics.json")]
        files += [f"results/{e}/{n}" for n in ("per_image.csv", "evaluation.json", "metrics.json")]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"{name} as a run wrote it\n")
    check(root)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "commit", "-f", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "built"]):
        proc = run(root, *cmd)
        assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)
    return root


@pytest.fixture
def workspace(built: Path) -> Path:
    """The built workspace, its params.yaml, dvc.lock and check as committed."""
    assert run(built, "git", "checkout", "-q", "--", "params.yaml", "dvc.lock").returncode == 0
    check(built)
    return built


def test_a_bad_value_stops_dvc_before_it_removes_anything(workspace: Path) -> None:
    """The typo of the request: through `dvc repro` and through `dvc exp run -S`, every file of
    models/K25 and results/K25 (and of every other run) is left as it was."""
    before = snapshot(workspace)
    params = workspace / "params.yaml"
    params.write_text(params.read_text().replace(*TYPO))
    proc = run(workspace, "dvc", "repro", "train@K25")
    assert proc.returncode != 0
    assert "experiments.K25: recursions = 'abc' is not allowed" in proc.stdout + proc.stderr
    assert "Running stage 'train@K25'" not in proc.stdout
    assert snapshot(workspace) == before

    params.write_text(params.read_text().replace(TYPO[1], TYPO[0]))
    proc = run(workspace, "dvc", "exp", "run", "-S", "experiments.K25.recursions=abc")
    assert proc.returncode != 0
    assert "experiments.K25: recursions = 'abc' is not allowed" in proc.stdout + proc.stderr
    assert snapshot(workspace) == before


def test_a_name_that_holds_a_command_runs_nothing_but_the_refusal(workspace: Path) -> None:
    """The whole pipeline stops at check_params; the stage alone (`dvc repro -s`, which skips the check, after a
    check of the file before the edit) has no values that a check resolved, which DVC refuses."""
    name = "x;touch pwned;$(touch pwned)"
    params = workspace / "params.yaml"
    params.write_text(params.read_text().replace("  K25: {recursions: 25}\n",
                                                 f"  K25: {{recursions: 25}}\n  '{name}': {{}}\n"))
    refusal = f"experiment name {name!r} is not allowed"
    proc = run(workspace, "dvc", "repro")
    assert proc.returncode != 0 and refusal in proc.stdout + proc.stderr
    assert "Running stage 'train@" not in proc.stdout
    assert not (workspace / "data/resolved.json").exists()  # DVC removed it before the check
    params.write_bytes(run(workspace, "git", "show", "HEAD:params.yaml").stdout.encode())
    check(workspace)
    params.write_text(params.read_text().replace("  K25: {recursions: 25}\n",
                                                 f"  K25: {{recursions: 25}}\n  '{name}': {{}}\n"))
    proc = run(workspace, "dvc", "repro", "-s", f"train@{name}")
    assert proc.returncode != 0 and "are missing from 'data/resolved.json'" in proc.stdout + proc.stderr
    assert "Running stage" not in proc.stdout
    assert not list(workspace.rglob("pwned"))


def test_a_switch_of_budget_makes_stale_only_the_stages_whose_values_it_changes(workspace: Path) -> None:
    """The paper and fast budgets differ only in `train`: after a switch from one to the other and its check, DVC
    would rerun the train stages, and neither augment, patch nor the evaluation of bicubic (nor of the models,
    which are as trained); an edit of the budget not in use changes nothing."""
    params = workspace / "params.yaml"

    def switch(old: str, new: str) -> list[str]:
        params.write_text(params.read_text().replace(old, new))
        assert run(workspace, "dvc", "repro", "check_params").returncode == 0
        proc = run(workspace, "dvc", "status", "--json")
        assert proc.returncode == 0, proc.stderr
        return sorted(json.loads(proc.stdout))

    assert switch("budget: quick\n", "budget: paper\n")
    assert run(workspace, "dvc", "commit", "-f", "-q").returncode == 0  # as built under the paper budget
    assert switch("budget: paper\n", "budget: fast\n") == ["train@K25", "train@K48"]
    assert run(workspace, "dvc", "commit", "-f", "-q").returncode == 0
    assert switch("  quick:\n    augment:\n      every: 12", "  quick:\n    augment:\n      every: 6") == []
