"""The paper's published numbers as tidy CSV tables, each row with the source it is quoted from."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent


def table(name: str) -> pd.DataFrame:
    """Load reference table `name` (e.g. "table1": PSNR/SSIM, "table2": IFC)."""
    path = HERE / f"{name}.csv"
    if not path.is_file():
        names = sorted(p.stem for p in HERE.glob("*.csv"))
        raise ValueError(f"no reference table {name!r}; available: {names}")
    return pd.read_csv(path)
