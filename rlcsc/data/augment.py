"""Augment stage: flipped, rotated and downsized luma copies of the 291 training images (Section 5.2).

For each training image, each flip state, each rotation and each downsizing factor, in that order
of operations: flip, rotate (counter-clockwise, as MATLAB's `imrotate`), `imresize` the RGB uint8
image by the factor, convert to YCbCr and keep Y (uint8). A grey image is its own Y.

The result is one flat uint8 file of all Y images (`images.u8`), an index (`index.csv`) with each
image's source, variant, shape and byte offset, so the patch stage can memory-map it, and the
resolved params (`params.json`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rlcsc.atomic import write_json
from rlcsc.color import rgb2y
from rlcsc.config import Checked, Rule, at_least, one_of, param
from rlcsc.errors import RlcscError
from rlcsc.imageio import read_image
from rlcsc.imresize import imresize, output_size
from rlcsc.manifest import paths
from rlcsc.parallel import pmap

FLIPS = ("updown", "leftright", "none")


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


def training_files(raw: Path, params: AugmentParams) -> list[Path]:
    """The training images under `raw`, in manifest order, every `params.every`-th one."""
    return paths(raw, params.datasets)[:: params.every]


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


def augment(files: Sequence[Path], out: Path, params: AugmentParams, jobs: int | None = None) -> pd.DataFrame:
    """Write every variant of every image in `files` to `out` (images.u8 + index.csv), atomically.

    A file that cannot be read stops the stage with an error naming it; nothing is left in `out`.
    """
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise RlcscError(f"missing training image {missing[0]}: run `rlcsc download` first")
    vs = variants(params)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows, offset = [], 0
    try:
        with open(tmp / "images.u8", "wb") as blob:
            for path, images in zip(files, pmap(_augment_one, [(p, vs) for p in files], jobs, desc="augment")):
                for v, y in zip(vs, images):
                    rows.append((path.parent.name, path.name, v.flip, v.rotation, v.factor, *y.shape, offset))
                    blob.write(y.tobytes())
                    offset += y.size
        index = pd.DataFrame(rows, columns=["dataset", "file", "flip", "rotation", "factor", "height", "width", "offset"])
        index.to_csv(tmp / "index.csv", index=False)
        write_json(asdict(params), tmp / "params.json")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return index


def load_augmented(folder: Path) -> tuple[pd.DataFrame, np.memmap]:
    """The augment stage's index and a read-only memory map of its image bytes."""
    index_path, blob = folder / "index.csv", folder / "images.u8"
    if not index_path.is_file() or not blob.is_file():
        raise RlcscError(f"no augmented images in {folder}: run `rlcsc augment` first")
    return pd.read_csv(index_path), np.memmap(blob, dtype=np.uint8, mode="r")
