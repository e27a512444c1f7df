"""Patch stage: the 33x33 training pairs of Section 5.2, stored for memory-mapped reading.

For each augmented Y image and each scale s: label = `modcrop(Y, s)` in [0, 1]; input =
`imresize(imresize(label, 1/s), size(label))` in float (not re-quantised); both are cut into
`size` x `size` patches at `stride` from the top-left corner. The pairs are written in that order;
a seeded permutation of all pairs, truncated to a multiple of `chunk` (the HDF5 chunk of the
MATLAB script that produced the paper's 1,929,728), is the training set (`keep.npy`).

Files in the output folder (numpy `.npy`, `np.load(..., mmap_mode="r")`):
- `labels.npy`  (N, size, size) uint8: exact, since labels are the uint8 Y values;
- `inputs.npy`  (N, size, size) float16 (or float32): the interpolated inputs;
- `origin.npy`  (N,) records: augmented image, scale, row, col of each pair;
- `keep.npy`    (M,) int64: the shuffled, truncated indices that form the training set;
- `summary.json`: counts per scale and per downsizing factor, shapes, dtypes, bytes, and what decides
  the pairs (`made_by`: the augment and patch params);
- `SHA256SUMS`: the SHA-256 of each, which training verifies once, before its first batch.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.format import open_memmap
from numpy.lib.stride_tricks import sliding_window_view

from rlcsc.atomic import folder_atomically, write_json
from rlcsc.checksums import SUMS, seal, verify
from rlcsc.config import Checked, at_least, one_of, param, within
from rlcsc.crop import modcrop
from rlcsc.data.augment import AugmentParams, check_out, load_augmented, variant_shape, variants
from rlcsc.errors import RlcscError
from rlcsc.imageio import image_size
from rlcsc.imresize import imresize
from rlcsc.parallel import pmap

ORIGIN = np.dtype([("image", "<i4"), ("scale", "u1"), ("row", "<u2"), ("col", "<u2")])
OUTPUTS = ("labels.npy", "inputs.npy", "origin.npy", "keep.npy", "summary.json", SUMS)
REDO = "rerun `rlcsc patch` (or `dvc repro patch`)"


@dataclass(frozen=True)
class PatchParams(Checked):
    """Block `patch` of params.yaml."""

    scales: tuple[int, ...] = param((2, 3, 4), one_of(2, 3, 4))
    size: int = param(33, at_least(1))
    stride: int = param(33, at_least(1))
    chunk: int = param(64, at_least(1))  # keep a multiple of this many pairs; 1 keeps them all
    seed: int = param(0, within(0, 2**32))
    input_dtype: str = param("float16", one_of("float16", "float32"))


def count_pairs(shape: tuple[int, int], scale: int, size: int, stride: int) -> int:
    """Pairs cut from an image of `shape` at `scale`: modcrop, then a grid from the top-left."""
    h, w = shape[0] - shape[0] % scale, shape[1] - shape[1] % scale
    if h < size or w < size:
        return 0
    return ((h - size) // stride + 1) * ((w - size) // stride + 1)


def make_pairs(y: np.ndarray, scale: int, size: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels uint8, inputs float64, top-left corners) of one uint8 Y image at one scale."""
    label = modcrop(y, scale)
    if min(label.shape) < size:
        return np.empty((0, size, size), np.uint8), np.empty((0, size, size)), np.empty((0, 2), int)
    hr = label / 255.0
    ilr = imresize(imresize(hr, 1 / scale), size=label.shape)
    rows = np.arange(0, label.shape[0] - size + 1, stride)
    cols = np.arange(0, label.shape[1] - size + 1, stride)

    def cut(img: np.ndarray) -> np.ndarray:
        return sliding_window_view(img, (size, size))[::stride, ::stride].reshape(-1, size, size)

    corners = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)
    return cut(label), cut(ilr), corners


def count_from_raw(files: list[Path], augment: AugmentParams, params: PatchParams) -> int:
    """Pairs that `augment` + `patch` would produce from `files`, from image headers alone."""
    vs = variants(augment)
    total = 0
    for path in files:
        size = image_size(path)
        for v in vs:
            shape = variant_shape(size, v)
            total += sum(count_pairs(shape, s, params.size, params.stride) for s in params.scales)
    return total


def kept(total: int, chunk: int) -> int:
    """Pairs kept after truncating to a multiple of `chunk`."""
    return total - total % chunk


def _identity(stat: os.stat_result) -> tuple[int, ...]:
    """What tells one file apart from the file an `rlcsc augment` puts at its path (a new file, renamed there)."""
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _replaced(augmented: Path | str) -> RlcscError:
    return RlcscError(f"{augmented} was replaced while patch read it (by an `rlcsc augment`?): "
                      "run patch again once it has ended")


def _write_pairs(task: tuple[str, tuple[int, ...], str, list[tuple[int, int, int, int, int]], PatchParams]) -> None:
    """Worker: cut the pairs of a run of augmented images and write them at their rows. The images file is
    mapped afresh for each run, never kept, and only if it is still the file whose index `make_patches`
    checked (`identity`): one that an `rlcsc augment` has put there since holds other images at other offsets."""
    blob_path, identity, tmp, images, params = task
    try:
        with open(blob_path, "rb") as f:
            if _identity(os.fstat(f.fileno())) != identity:
                raise _replaced(Path(blob_path).parent)
            blob = np.memmap(f, dtype=np.uint8, mode="r")
    except FileNotFoundError:
        raise _replaced(Path(blob_path).parent) from None
    dtype = np.dtype(params.input_dtype)
    files = {name: np.load(Path(tmp) / f"{name}.npy", mmap_mode="r+") for name in ("labels", "inputs", "origin")}
    for image, offset, h, w, start in images:
        y = blob[offset : offset + h * w].reshape(h, w)
        for s in params.scales:
            labels, inputs, corners = make_pairs(y, s, params.size, params.stride)
            end = start + len(labels)
            files["labels"][start:end] = labels
            files["inputs"][start:end] = inputs.astype(dtype)
            origin = files["origin"][start:end]
            origin["image"], origin["scale"] = image, s
            origin["row"], origin["col"] = corners[:, 0], corners[:, 1]
            start = end
    for arr in files.values():
        arr.flush()


def make_patches(augmented: Path, out: Path, params: PatchParams, jobs: int | None = None) -> dict:
    """Cut, store and shuffle all pairs of the augmented images into `out`, atomically.

    Corrupt augmented files, or an `out` holding anything but a previous patch output, are refused
    before any work.
    """
    blob = augmented / "images.u8"
    before = _identity(blob.stat()) if blob.is_file() else None  # else `load_augmented` names what is missing
    index = load_augmented(augmented)
    augmented_by = json.loads((augmented / "params.json").read_text())  # checked by `load_augmented`
    identity = _identity(blob.stat())
    if identity != before:  # the index and params read are not of the images file the workers would read
        raise _replaced(augmented)
    check_out(out, OUTPUTS, "patch")
    per_image = np.array(
        [sum(count_pairs((h, w), s, params.size, params.stride) for s in params.scales)
         for h, w in zip(index.height, index.width)]
    )
    starts = np.concatenate([[0], np.cumsum(per_image)[:-1]])
    total = int(per_image.sum())
    if kept(total, params.chunk) == 0:
        raise RlcscError(f"no training pairs: {total} pairs is less than one chunk of {params.chunk}")
    with folder_atomically(out) as tmp:
        pair = (total, params.size, params.size)
        layout = (("labels", np.uint8, pair), ("inputs", params.input_dtype, pair), ("origin", ORIGIN, (total,)))
        for name, dtype, shape in layout:  # allocated here, filled by the workers
            open_memmap(tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
        _reserve([tmp / f"{name}.npy" for name, _, _ in layout], out)
        rows = list(zip(index.index, index.offset, index.height, index.width, starts))
        step = max(1, len(rows) // (64 * (jobs or os.cpu_count() or 1)))
        tasks = [(str(blob), identity, str(tmp), rows[i : i + step], params)
                 for i in range(0, len(rows), step)]
        for _ in pmap(_write_pairs, tasks, jobs, desc="patch", unit="chunk"):
            pass
        rng = np.random.default_rng(params.seed)
        keep = rng.permutation(total)[: kept(total, params.chunk)]
        np.save(tmp / "keep.npy", keep)
        summary = _summary(index, np.load(tmp / "origin.npy", mmap_mode="r"), keep, params, tmp)
        summary["made_by"] = made_by(augmented_by, asdict(params))
        write_json(summary, tmp / "summary.json")
        seal(tmp)
    return summary


def _reserve(files: list[Path], out: Path) -> None:
    """Give the (sparse) memory-mapped `files` their disk space now, where the system has the call: a disk
    without room for the patch set `out` is then one clear error here, before any work, not a worker killed
    when it writes into the map."""
    if not hasattr(os, "posix_fallocate"):
        return
    need = sum(f.stat().st_size for f in files)
    for path in files:
        with open(path, "r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            except OSError as err:
                raise RlcscError(f"no room for the patch set {out}: it needs {need / 1e9:.2f} GB "
                                 f"({err.strerror})") from None


def made_by(augment: dict, patch: dict) -> dict:
    """What decides a patch set's pairs, as its `summary.json` holds it: the params of the augment and patch
    stages (the images are the manifest's, and the code is in the training code's hash)."""
    return json.loads(json.dumps({"augment": augment, "patch": patch}))


def _summary(index: pd.DataFrame, origin: np.ndarray, keep: np.ndarray, params: PatchParams, folder: Path) -> dict:
    """Counts per scale and per downsizing factor (all pairs and kept ones), shapes, dtypes, bytes."""
    factor = index.factor.to_numpy()[origin["image"]]
    kept_mask = np.zeros(len(origin), bool)
    kept_mask[keep] = True

    def counts(values: np.ndarray) -> dict:
        return {
            str(v): {"all": int((values == v).sum()), "kept": int(((values == v) & kept_mask).sum())}
            for v in np.unique(values)
        }

    return {
        "pairs": len(origin),
        "kept": len(keep),
        "per_scale": counts(origin["scale"]),
        "per_factor": counts(factor),
        "augmented_images": len(index),
        "shapes": {"labels": [len(origin), params.size, params.size],
                   "inputs": [len(origin), params.size, params.size]},
        "dtypes": {"labels": "uint8", "inputs": params.input_dtype},
        "params": asdict(params),
        "bytes": {p.name: p.stat().st_size for p in sorted(folder.glob("*.npy"))},
    }


@dataclass(frozen=True)
class PatchSet:
    """The stored pairs, memory-mapped, and what decides them (`made_by`); `keep` lists the training set's pairs
    in its shuffled order (`rlcsc.train.Batches` gathers them)."""

    labels: np.ndarray
    inputs: np.ndarray
    keep: np.ndarray
    made_by: dict

    @classmethod
    def open(cls, folder: Path) -> PatchSet:
        """Memory-map the patch set in `folder`, checking that its files are whole and agree, and that each
        has the SHA-256 the patch stage recorded (read once, here)."""
        arrays = []
        for path in (folder / f"{n}.npy" for n in ("labels", "inputs", "keep")):
            try:
                arrays.append(np.load(path, mmap_mode="r"))
            except FileNotFoundError:
                raise RlcscError(f"no patch set in {folder} ({path} missing): run `rlcsc patch` first") from None
            except (ValueError, EOFError):  # truncated, or not a plain numpy array
                raise RlcscError(f"corrupt patch file {path}: truncated or not a numpy array; {REDO}") from None
        labels, inputs, keep = arrays
        if not (labels.ndim == 3 and labels.dtype == np.uint8 and inputs.shape == labels.shape
                and inputs.dtype in (np.float16, np.float32) and keep.ndim == 1 and keep.dtype.kind in "iu"
                and len(keep) and 0 <= keep.min() and keep.max() < len(labels)):
            raise RlcscError(f"corrupt patch set in {folder}: labels.npy, inputs.npy and keep.npy disagree; {REDO}")
        verify(folder, REDO)
        summary = json.loads((folder / "summary.json").read_text())
        if "made_by" not in summary:
            raise RlcscError(f"the patch set in {folder} does not say what made its pairs "
                             f"(an older patch stage's); {REDO}")
        return cls(labels, inputs, keep, summary["made_by"])

    def __len__(self) -> int:
        return len(self.keep)
