"""The manifests: every file the pipeline fetches, its size, SHA-256 and pinned URL.

`manifest.tsv` lists T91 and BSD200 (the 291 training images of Section 5.1) and the test sets
Set5, Set14, BSD100 and Urban100. Every stage finds an image as `raw/<dataset>/<file>`; `paths`
is the one place that layout is written. `weights.tsv` lists the comparison methods' released model
files the same way (group, file, bytes, SHA-256, URL), one group per method.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rlcsc.errors import RlcscError

MANIFEST = Path(__file__).with_name("manifest.tsv")
WEIGHTS = Path(__file__).with_name("weights.tsv")
TEST_SETS = ("Set5", "Set14", "BSD100", "Urban100")


@dataclass(frozen=True)
class Entry:
    """One manifest row: a file of a dataset (or of a method's weights), its size and SHA-256, and the URL
    it comes from."""

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
    """Read a manifest (its columns: dataset or group, file, bytes, sha256, url), keeping only `datasets`
    (all when None), in file order."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        entries = [Entry(group, file, int(size), sha256, url) for group, file, size, sha256, url in rows]
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


def checked_images(raw: Path, datasets: Sequence[str]) -> list[Path]:
    """`paths`, each file checked against its SHA-256 in the manifest first (test images before they are
    scored, training images before int8 calibration): one clear error names the first that is missing
    or holds other bytes."""
    found = []
    for e in load_manifest(datasets=datasets):
        path = raw / e.relpath
        if not path.is_file():
            raise RlcscError(f"missing image {path}: run `rlcsc download --out {raw}` first")
        if file_sha256(path) != e.sha256:
            raise RlcscError(f"corrupt {path}: not the file {MANIFEST.name} pins (its SHA-256 differs); fetch it "
                             f"again with `rlcsc download --out {raw}`")
        found.append(path)
    return found


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
