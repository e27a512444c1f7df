"""Augment stage: flipped, rotated and downsized luma copies of the 291 training images (Section 5.2).

For each training image, each flip state, each rotation and each downsizing factor, in that order
of operations: flip, rotate (counter-clockwise, as MATLAB's `imrotate`), `imresize` the RGB uint8
image by the factor, convert to YCbCr and keep Y (uint8). A grey image is its own Y.

The result is one flat uint8 file of all Y images (`images.u8`), an index (`index.csv`) with each
image's source, variant, shape and byte offset, so the patch stage can memory-map it, the
resolved params (`params.json`), and the SHA-256 of each (`SHA256SUMS`), which the patch stage
verifies before it reads them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import is_integer_dtype

from rlcsc.atomic import folder_atomically, write_json
from rlcsc.checksums import SUMS, seal, verify
from rlcsc.color import rgb2y
from rlcsc.config import Checked, Rule, at_least, one_of, param
from rlcsc.errors import RlcscError
from rlcsc.imageio import read_image
from rlcsc.imresize import imresize, output_size
from rlcsc.manifest import Entry, checked_images, digest
from rlcsc.parallel import pmap

FLIPS = ("updown", "leftright", "none")
OUTPUTS = ("images.u8", "index.csv", "params.json", SUMS)
COLUMNS = ["dataset", "file", "flip", "rotation", "factor", "height", "width", "offset"]
REDO = "rerun `rlcsc augment` (or `dvc repro augment`)"


@dataclass(frozen=True)
class AugmentParams(Checked):
    """Block `augment` of params.yaml: which images, and which variants of each."""

    datasets: tuple[str, ...] = param(("T91", "BSD200"), one_of("T91", "BSD200"))
    every: int = param(1, at_least(1))  # keep every n-th training image (1 = all 291); the quick budget uses fewer
    flips: tuple[str, ...] = param(FLIPS, one_of(*FLIPS))
    rotations: tuple[int, ...] = param((0, 90, 180, 270), one_of(0, 90, 180, 270))
    factors: tuple[float, ...] = param((1.0, 0.7, 0.5, 0.4), Rule(lambda f: 0 < f <= 1, "in (0, 1]"))


@dataclass(frozen=True)
class Variant:
    """One augmentation of one image: flip state, rotation in degrees, downsizing factor."""

    flip: str
    rotation: int
    factor: float


def variants(params: AugmentParams) -> list[Variant]:
    """All variants in the protocol's loop order: flip, then rotation, then factor."""
    return [
        Variant(f, r, s) for f in params.flips for r in params.rotations for s in params.factors
    ]


def _same_pixels(path: Path, entry: Entry) -> bool:
    """Whether the image file at `path` holds the pixels of the training image `entry` pins (in any lossless
    form), all that the augmentation reads of it."""
    try:
        return digest(read_image(path)) == entry.pixels_sha256
    except RlcscError:
        return False


def training_files(raw: Path, params: AugmentParams) -> list[Path]:
    """The training images under `raw`, in manifest order, every `params.every`-th one, each checked first
    against its SHA-256 or, where its bytes differ, its pixels' (a damaged BMP still decodes): one clear error
    names the first missing or corrupt."""
    return checked_images(raw, params.datasets, _same_pixels, "an image of its pixels")[:: params.every]


def transform(img: np.ndarray, v: Variant) -> np.ndarray:
    """Flip, rotate, downsize (RGB uint8, MATLAB `imresize`), then take Y: one augmented image."""
    if v.flip == "updown":
        img = img[::-1]
    elif v.flip == "leftright":
        img = img[:, ::-1]
    img = np.rot90(img, v.rotation // 90)
    if v.factor != 1:
        img = imresize(np.ascontiguousarray(img), v.factor)
    return np.ascontiguousarray(rgb2y(img))


def variant_shape(size: tuple[int, int], v: Variant) -> tuple[int, int]:
    """Shape of `transform`'s output for an image of `size`, without computing it."""
    if (v.rotation // 90) % 2:
        size = (size[1], size[0])
    return output_size(size, v.factor) if v.factor != 1 else size


def _augment_one(task: tuple[Path, list[Variant]]) -> list[np.ndarray]:
    path, vs = task
    img = read_image(path)
    return [transform(img, v) for v in vs]


def check_out(out: Path, outputs: Sequence[str], stage: str) -> None:
    """Refuse an output folder that holds anything but `stage`'s own files: a previous output is
    replaced, and anything else would be deleted with it. A symbolic link is refused too: the new folder
    would replace the link, not the folder it points to."""
    if out.is_symlink():
        raise RlcscError(f"output folder {out} is a symbolic link (to {os.path.realpath(out)}); {stage} replaces "
                         "its folder whole, so name that folder itself, or link the folder above it")
    if out.is_file():
        raise RlcscError(f"output folder {out} is a file; choose a new or empty folder")
    foreign = ([p.name for p in sorted(out.iterdir()) if p.name not in outputs or not p.is_file()]
               if out.is_dir() else [])
    if foreign:
        raise RlcscError(f"output folder {out} holds files that are not {stage} output (e.g. {foreign[0]}); "
                         "refusing to delete them: choose a new or empty folder")


def augment(files: Sequence[Path], out: Path, params: AugmentParams, jobs: int | None = None) -> pd.DataFrame:
    """Write every variant of every image in `files` to `out` (images.u8 + index.csv), atomically.

    A file that cannot be read stops the stage with an error naming it; nothing is left in `out`.
    An `out` holding anything but a previous augment output is refused before any work.
    """
    check_out(out, OUTPUTS, "augment")
    vs = variants(params)
    rows, offset = [], 0
    with folder_atomically(out) as tmp:
        with open(tmp / "images.u8", "wb") as blob:
            # strict: zip then asks pmap for one more item, which lets its progress bar reach the end
            for path, images in zip(files, pmap(_augment_one, [(p, vs) for p in files], jobs, desc="augment"),
                                    strict=True):
                for v, y in zip(vs, images):
                    rows.append((path.parent.name, path.name, v.flip, v.rotation, v.factor, *y.shape, offset))
                    blob.write(y.tobytes())
                    offset += y.size
        index = pd.DataFrame(rows, columns=COLUMNS)
        index.to_csv(tmp / "index.csv", index=False)
        write_json(asdict(params), tmp / "params.json")
        seal(tmp)
    return index


def load_augmented(folder: Path) -> pd.DataFrame:
    """The augment stage's index, checked against itself and against the size of `images.u8`, and every
    file against its SHA-256."""
    index_path, blob = folder / "index.csv", folder / "images.u8"
    if not index_path.is_file() or not blob.is_file():
        raise RlcscError(f"no augmented images in {folder}: run `rlcsc augment` first")
    try:
        index = pd.read_csv(index_path)
    except ValueError:  # pandas' ParserError and EmptyDataError, and undecodable bytes
        raise RlcscError(f"corrupt {index_path}: not a readable CSV table; {REDO}") from None
    if list(index.columns) != COLUMNS or not all(is_integer_dtype(index[c]) for c in ("height", "width", "offset")):
        raise RlcscError(f"corrupt {index_path}: expected columns {COLUMNS} with integer height, width, offset; {REDO}")
    h, w = index.height.to_numpy(), index.width.to_numpy()
    sizes = h * w
    if (h <= 0).any() or (w <= 0).any() or not np.array_equal(index.offset, np.cumsum(sizes) - sizes):
        raise RlcscError(f"corrupt {index_path}: image shapes and byte offsets disagree; {REDO}")
    if sizes.sum() != blob.stat().st_size:
        raise RlcscError(f"corrupt {blob}: it holds {blob.stat().st_size} bytes, "
                         f"{index_path.name} describes {sizes.sum()}; {REDO}")
    verify(folder, REDO)
    return index
