"""An ablation end to end with the quick budget, on a copy of a workspace that `dvc repro` has built:
a code change reruns exactly the stages that import it, and a new or edited experiment is trained,
evaluated and placed in the book by what it is, not by its name. It needs the built workspace and
minutes of training, so it runs only when RLCSC_ABLATION=1 (`.ci/run` sets it after `dvc repro`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from bs4 import BeautifulSoup

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.environ.get("RLCSC_ABLATION") != "1",
                                reason="set RLCSC_ABLATION=1 after `dvc repro` to run the ablation end to end")


def dvc(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "dvc"
    env = {**os.environ, "PATH": f"{exe.parent}:{os.environ['PATH']}"}
    proc = subprocess.run([str(exe), *args], cwd=workspace, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the built workspace (git history, DVC cache and outputs included)."""
    copy = tmp_path_factory.mktemp("ablation") / "rlcsc"
    shutil.copytree(REPO, copy, symlinks=True, ignore=shutil.ignore_patterns(".venv"))
    assert dvc(copy, "status", "--json").stdout.strip() == "{}", "the workspace is not built: run `dvc repro` first"
    return copy


def changed_stages(workspace: Path) -> set[str]:
    return set(json.loads(dvc(workspace, "status", "--json").stdout))


def test_a_code_change_reruns_exactly_the_stages_that_import_it(workspace: Path) -> None:
    color = workspace / "rlcsc" / "color.py"
    text = color.read_text()
    color.write_text(text + "\n# touched\n")
    try:
        changed = changed_stages(workspace)
    finally:
        color.write_text(text)
    experiments = yaml.safe_load((workspace / "params.yaml").read_text())["experiments"]
    expected = {"check_params", "augment", "patch", "evaluate_bicubic", "notebook_table3", "notebook_figures4_6",
                "notebook_intro", "notebook_methods"}  # color.py via the scorecard and output route
    expected |= {f"{stage}@{e}" for e in experiments for stage in ("train", "evaluate")}
    released = yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"]["evaluate_released"]["foreach"]
    expected |= {f"evaluate_released@{m}" for m in released}  # the released models' evaluation reads images too
    assert changed == expected
    assert changed_stages(workspace) == set()


def test_a_new_and_an_edited_experiment_reach_the_book_by_what_they_are(workspace: Path) -> None:
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["experiments"]["K10"] = {"recursions": 10}  # the cheapest new and edited networks to train
    params["experiments"]["K15"] = {"recursions": 12}
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = dvc(workspace, "repro").stdout
    ran = set(re.findall(r"Running stage '([^']+)'", log))
    assert {s for s in ran if "@" in s} == {"train@K10", "evaluate@K10", "train@K15", "evaluate@K15"}
    html = workspace / "book" / "_build" / "html" / "generated"
    for page in ("figure1", "figure7"):  # its runs tables (paper scale, quick budget): run, made by, network, ...
        article = BeautifulSoup((html / f"{page}.html").read_text(), "html.parser").select_one("article")
        rows = {cells[0]: cells[1:] for t in article.select("table") if "made by" in t.get_text()
                for cells in ([c.get_text(" ", strip=True) for c in tr.find_all(["th", "td"])]
                              for tr in t.select("tbody tr"))}
        assert rows["K10"][0] == rows["K15"][0] == "this pipeline"
        assert rows["K10"][1].startswith("K = 10,") and rows["K15"][1].startswith("K = 12,")
    table = BeautifulSoup((html / "figure1.html").read_text(), "html.parser").select("article table")
    assert any("K10" in t.get_text() and "K15" in t.get_text() for t in table)
