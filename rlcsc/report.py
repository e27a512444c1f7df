"""What the report notebooks share: reading this run's results, laying them beside the paper's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from rlcsc.config import read_params
from rlcsc.reference import table

HIDDEN_TAGS = {"parameters", "injected-parameters"}

THIS_RUN = " †"  # marks this run's columns; the others are quoted from the paper

RED, BLUE = "color: #d00000; font-weight: bold", "color: #0050d0; font-weight: bold"


def budget(params: Path) -> str:
    """The budget this run used, as params.yaml says."""
    return str(read_params(params).get("budget", "paper"))


def budget_note(params: Path) -> str:
    """One sentence to head every page: which budget produced this run's numbers."""
    b = budget(params)
    if b == "paper":
        return "This run used the **paper** budget: the full protocol of the paper."
    return (f"This run used the **{b}** budget: a miniature of the paper's protocol (fewer training "
            "images and steps, narrower networks; see params.yaml). Its numbers show that the pipeline "
            "works end to end; they are not expected to match the paper's.")


def metrics(results: Path, name: str) -> dict | None:
    """`results/<name>/metrics.json` of this run, or None if that evaluation did not run."""
    path = results / name / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def training(models: Path, name: str) -> dict | None:
    """`models/<name>/train.json` of this run, or None if that training did not run."""
    path = models / name / "train.json"
    return json.loads(path.read_text()) if path.exists() else None


def comparison(ref: str, metric: str, ours: dict[str, dict | None]) -> pd.DataFrame:
    """Published columns of reference table `ref` beside this run's columns (labels ending in
    THIS_RUN), one row per dataset/scale; `ours` maps a label to a metrics.json mapping, or None when
    that evaluation did not run. Cells this run did not evaluate are NaN."""
    published = table(ref).pivot_table(index=["dataset", "scale"], columns="method", values=metric, sort=False)
    published.columns = list(published.columns)
    for label, m in ours.items():
        published[f"{label}{THIS_RUN}"] = [
            (m or {}).get(d, {}).get(f"x{s}", {}).get(metric, np.nan) for d, s in published.index
        ]
    return published


def mark_best(frame: pd.DataFrame, digits: int) -> "pd.io.formats.style.Styler":
    """Red for the best and blue for the second best value of each row, as the paper marks them."""

    def colours(row: pd.Series) -> list[str]:
        order = row.dropna().sort_values(ascending=False).index
        style = {order[0]: RED} if len(order) > 0 else {}
        if len(order) > 1:
            style[order[1]] = BLUE
        return [style.get(c, "") for c in row.index]

    small = [{"selector": "", "props": "font-size: 0.85em"}]
    return frame.style.apply(colours, axis=1).format(f"{{:.{digits}f}}", na_rep="not run").set_table_styles(small)


def execute_notebook(source: Path, target: Path, parameters: dict) -> None:
    """Run a report notebook with papermill into `target`, hiding its parameter cells in the book."""
    import nbformat
    import papermill

    tmp = target.with_name(f".{target.name}.tmp.ipynb")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(str(source), str(tmp), parameters=parameters, kernel_name="python3", cwd=".")
        nb = nbformat.read(tmp, as_version=4)
        for cell in nb.cells:
            tags = cell.metadata.setdefault("tags", [])
            if HIDDEN_TAGS & set(tags) and "remove-cell" not in tags:
                tags.append("remove-cell")
        nbformat.write(nb, tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
