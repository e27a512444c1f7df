"""The dataset manifest: every training and test image, its size, SHA-256 and pinned URL.

`manifest.tsv` lists T91 and BSD200 (the 291 training images of Section 5.1) and the test sets
Set5, Set14, BSD100 and Urban100. Every stage finds an image as `raw/<dataset>/<file>`; `paths`
is the one place that layout is written.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rlcsc.errors import RlcscError

MANIFEST = Path(__file__).with_name("manifest.tsv")
TEST_SETS = ("Set5", "Set14", "BSD100", "Urban100")


@dataclass(frozen=True)
class Entry:
    """One manifest row: a file, its size and SHA-256, and the URL it comes from."""

    dataset: str
    file: str
    bytes: int
    sha256: str
    url: str

    @property
    def relpath(self) -> str:
        """``dataset/file``, the file's place under a data folder or mirror."""
        return f"{self.dataset}/{self.file}"


def load_manifest(path: Path = MANIFEST, datasets: Sequence[str] | None = None) -> list[Entry]:
    """Read the manifest, keeping only `datasets` (all when None), in file order."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        entries = [Entry(r["dataset"], r["file"], int(r["bytes"]), r["sha256"], r["url"]) for r in rows]
    if datasets is None:
        return entries
    known = list(dict.fromkeys(e.dataset for e in entries))
    unknown = [d for d in datasets if d not in known]
    if unknown:
        raise RlcscError(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return [e for e in entries if e.dataset in datasets]


def paths(raw: Path, datasets: Sequence[str]) -> list[Path]:
    """The files of `datasets` under the data folder `raw`, in manifest order."""
    return [raw / e.dataset / e.file for e in load_manifest(datasets=datasets)]
