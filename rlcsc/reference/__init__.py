"""The paper's published numbers as tidy CSV tables, each row with the source it is quoted from."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
# What each table's row is the published number of: one row each, or a page would show a mean the paper never printed.
KEYS = {"figure1": ["model", "layers"], "figure7": ["recursions"], "table1": ["dataset", "scale", "method"],
        "table2": ["dataset", "scale", "method"], "table3": ["epoch", "residual"],
        "table4": ["model", "layers", "framework", "batch", "patch"]}


def table(name: str) -> pd.DataFrame:
    """Load reference table `name` (e.g. "table1": PSNR/SSIM, "table2": IFC), each of its numbers once (`KEYS`)."""
    path = HERE / f"{name}.csv"
    if not path.is_file():
        names = sorted(p.stem for p in HERE.glob("*.csv"))
        raise ValueError(f"no reference table {name!r}; available: {names}")
    frame = pd.read_csv(path)
    twice = frame[frame.duplicated(KEYS[name], keep=False)]
    if len(twice):
        raise ValueError(f"{path}: {len(twice)} rows give the same published number ({', '.join(KEYS[name])}: "
                         f"{', '.join(map(str, twice[KEYS[name]].iloc[0]))}); keep one")
    return frame
