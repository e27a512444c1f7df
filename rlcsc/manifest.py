"""The manifests: every file the pipeline fetches, its size, SHA-256 and pinned URL.

`manifest.tsv` lists T91 and BSD200 (the 291 training images of Section 5.1) and the test sets
Set5, Set14, BSD100 and Urban100. Beside a file's SHA-256 it pins the SHA-256 of what is read of it
(`digest`): for a training image its decoded pixels (`pixels_sha256`), all that the augmentation reads; for a
test image its Y channel (`y_sha256`), all that the evaluation protocol reads. So an image in another lossless
form (re-encoded, or a test image as its Y alone) is accepted where its bytes differ. Every stage
finds an image as `raw/<dataset>/<file>`; `paths` is the one place that layout is written.
`weights.tsv` lists the comparison methods' released model files the same way (group, file, bytes,
SHA-256, URL), one group per method.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlcsc.errors import RlcscError

MANIFEST = Path(__file__).with_name("manifest.tsv")
WEIGHTS = Path(__file__).with_name("weights.tsv")
TEST_SETS = ("Set5", "Set14", "BSD100", "Urban100")


@dataclass(frozen=True)
class Entry:
    """One manifest row: a file of a dataset (or of a method's weights), its size and SHA-256, the URL
    it comes from, and the `digest` of a test image's Y channel or of a training image's pixels."""

    dataset: str
    file: str
    bytes: int
    sha256: str
    url: str
    y_sha256: str = ""
    pixels_sha256: str = ""

    @property
    def relpath(self) -> str:
        """``dataset/file``, the file's place under a data folder or mirror."""
        return f"{self.dataset}/{self.file}"


def load_manifest(path: Path = MANIFEST, datasets: Sequence[str] | None = None) -> list[Entry]:
    """Read a manifest (its columns, by their header: dataset or group, file, bytes, sha256, url, and
    optionally y_sha256 and pixels_sha256), keeping only `datasets` (all when None), in file order."""
    with open(path, newline="", encoding="utf-8") as f:
        header, *rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    entries = []
    for group, *rest in rows:
        cells = dict(zip(header[1:], rest, strict=True))
        entries.append(Entry(group, cells.pop("file"), int(cells.pop("bytes")), **cells))
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


def checked_images(raw: Path, datasets: Sequence[str], same: Callable[[Path, Entry], bool] | None = None,
                   other_form: str = "") -> list[Path]:
    """`paths`, each file checked against its SHA-256 in the manifest first, or, where its bytes differ, by `same`
    (training images: the pinned one's pixels, `rlcsc.data.augment.training_files`; test images: an image of
    the pinned one's Y channel, `rlcsc.evaluate.checked_test_images`), the form it accepts said by `other_form`:
    one clear error names the first that is missing or neither."""
    found = []
    for e in load_manifest(datasets=datasets):
        path = raw / e.relpath
        if not path.is_file():
            raise RlcscError(f"missing image {path}: run `rlcsc download --out {raw}` first")
        if file_sha256(path) != e.sha256 and not (same and same(path, e)):
            nor = f", nor {other_form}" if same else ""
            raise RlcscError(f"corrupt {path}: not the file {MANIFEST.name} pins (its SHA-256 differs){nor}; fetch "
                             f"it again with `rlcsc download --out {raw}`")
        found.append(path)
    return found


def digest(pixels: np.ndarray) -> str:
    """The SHA-256 of uint8 pixels (a Y channel, or an image's channels): their shape ("HxW" or "HxWxC") and a
    line break, then their bytes, row by row (`manifest.tsv`'s `y_sha256` and `pixels_sha256`)."""
    sha = hashlib.sha256(("x".join(map(str, pixels.shape)) + "\n").encode())
    sha.update(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
    return sha.hexdigest()


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
