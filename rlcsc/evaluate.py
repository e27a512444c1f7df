"""The evaluation protocol of the paper's comparison numbers (the DRRN/MemNet MATLAB test scripts).

For each test image and scale s:
1. Y of the uint8 HR image by MATLAB `rgb2ycbcr` (rounded; a single-channel image is its own Y),
   as double in [0, 1], `modcrop`ped to s;
2. the interpolated low-resolution (ILR) input: `imresize(imresize(Y, 1/s), s)` in double;
3. the method maps the ILR image to its estimate (bicubic: the ILR image itself);
4. reference and estimate are rounded to uint8 MATLAB-style, shaved by s on every side and
   compared in float64 on 0..255: PSNR, SSIM (`ssim_index.m`) and IFC (`ifcvec.m`).
Every method goes through `evaluate`, so a network's numbers and bicubic's are comparable.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from rlcsc.atomic import all_atomically, json_text, text_writer
from rlcsc.color import rgb2y
from rlcsc.config import Checked, one_of, param
from rlcsc.crop import modcrop, shave
from rlcsc.errors import RlcscError
from rlcsc.ifc import MIN_SIDE, ifc
from rlcsc.imageio import read_image
from rlcsc.imresize import imresize
from rlcsc.manifest import TEST_SETS, Entry, checked_images, digest
from rlcsc.metrics import psnr, ssim
from rlcsc.parallel import pmap, pool
from rlcsc.rounding import im2uint

SCALES = (2, 3, 4)


@dataclass(frozen=True)
class EvaluateParams(Checked):
    """Block `evaluate` of params.yaml: which test sets and scales are scored, whether IFC is, and
    the precision of a network's convolutions (tf32 | fp32 | bf16 | winograd; the CPU computes tf32 in fp32,
    and bf16 where it has native bf16, else winograd; a GPU winograd in fp32:
    `rlcsc.device.inference_precision`)."""

    datasets: tuple[str, ...] = param(TEST_SETS, one_of(*TEST_SETS))
    scales: tuple[int, ...] = param(SCALES, one_of(*SCALES))
    ifc: bool = param(True)
    precision: str = param("tf32", one_of("tf32", "fp32", "bf16", "winograd"))  # device.INFERENCE_PRECISIONS


# Maps the ILR image (float64 Y in [0, 1]; a tensor on its device for an `in_process` upscaler)
# and the scale to the super-resolved image (numpy).
Upscaler = Callable[[np.ndarray, int], np.ndarray]


def bicubic(ilr: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: the interpolated input is the estimate."""
    return ilr


def check_size(path: Path, shape: tuple[int, ...], scale: int) -> None:
    """One clear error naming a test image of `shape` too small for the protocol at `scale`: after
    `modcrop` and shaving `scale` pixels from each border, IFC's pyramid needs `MIN_SIDE` left (SSIM's window 11)."""
    side = -(-(MIN_SIDE + 2 * scale) // scale) * scale  # the smallest multiple of the scale that leaves it
    if min(shape[:2]) < side:
        raise RlcscError(f"test image {path} is {shape[1]}x{shape[0]}: the protocol at x{scale} needs at least "
                         f"{side}x{side} ({scale} pixels shaved from each border, {MIN_SIDE} left for IFC)")


def _same_y(path: Path, entry: Entry) -> bool:
    """Whether the image file at `path` holds the Y channel of the test image `entry` pins (in any lossless
    form: the file itself, or a single-channel image of its Y), which is all that step 1 reads of it."""
    try:
        y = rgb2y(read_image(path))
    except RlcscError:
        return False
    return digest(y) == entry.y_sha256


def checked_test_images(raw: Path, datasets: Sequence[str]) -> list[Path]:
    """The images of the test sets `datasets` under `raw`, each checked before any is scored: the file
    `manifest.tsv` pins (its SHA-256), or an image of the same Y channel (its `y_sha256`)."""
    return checked_images(raw, datasets, _same_y, "an image of its Y channel")


def read_y(path: Path, scale: int) -> np.ndarray:
    """Step 1 of the protocol: the uint8 Y channel of an image file, `modcrop`ped to `scale`."""
    y = rgb2y(read_image(path))
    check_size(path, y.shape, scale)
    return modcrop(y, scale)


def ilr_pair(path: Path, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(HR Y, ILR Y) of one test image at one scale, float64 in [0, 1]: steps 1-2 of the protocol."""
    hr = read_y(path, scale) / 255
    return hr, imresize(imresize(hr, 1 / scale), scale)


def ilr_pairs(raw: Path, dataset: str, scale: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`ilr_pair` of every image of `dataset` under `raw`, each checked against the manifest first."""
    return [ilr_pair(path, scale) for path in checked_test_images(raw, [dataset])]


@dataclass(frozen=True)
class ImageScore:
    """Metrics of one image at one scale; `ifc` is NaN when not computed."""

    dataset: str
    image: str
    scale: int
    psnr: float
    ssim: float
    ifc: float


def quantize(img: np.ndarray, scale: int) -> np.ndarray:
    """Step 4's first half: round to uint8 MATLAB-style and shave `scale` pixels per side."""
    return shave(im2uint(img), scale).astype(np.uint8)


def compare(ref: np.ndarray, out: np.ndarray, with_ifc: bool) -> tuple[float, float, float]:
    """Step 4's second half: PSNR, SSIM, IFC of quantised images in float64 (reference first)."""
    ref, out = ref.astype(np.float64), out.astype(np.float64)
    return psnr(ref, out), ssim(ref, out), ifc(ref, out) if with_ifc else float("nan")


def score(hr: np.ndarray, sr: np.ndarray, scale: int, with_ifc: bool) -> tuple[float, float, float]:
    """Step 4: quantise, shave, compare (reference first)."""
    return compare(quantize(hr, scale), quantize(sr, scale), with_ifc)


def _score_file(task: tuple[str, Path, int, Upscaler, bool]) -> ImageScore:
    dataset, path, scale, upscale, with_ifc = task
    hr, ilr = ilr_pair(path, scale)
    sr = upscale(ilr, scale)
    return ImageScore(dataset, path.name, scale, *score(hr, sr, scale, with_ifc))


def _compare_task(task: tuple[str, str, int, np.ndarray, np.ndarray, bool]) -> ImageScore:
    dataset, name, scale, ref, out, with_ifc = task
    return ImageScore(dataset, name, scale, *compare(ref, out, with_ifc))


def evaluate(
    upscale: Upscaler,
    raw: Path,
    datasets: Sequence[str] = TEST_SETS,
    scales: Sequence[int] = SCALES,
    with_ifc: bool = True,
    jobs: int | None = None,
) -> list[ImageScore]:
    """Score every image of `datasets` under `raw/<dataset>/` at every scale, on `jobs` processes, once
    every image is checked against the manifest (`checked_test_images`).

    An upscaler marked `in_process` (a network on a GPU) is called in this process with the ILR
    image as a float64 tensor on its `device`; every other upscaler runs in the workers on numpy.
    """
    bad = [s for s in scales if s not in SCALES]
    if bad:
        raise RlcscError(f"scales must be among {list(SCALES)}, got {bad}")
    tasks = []
    for dataset in datasets:
        tasks += [(dataset, path, s, upscale, with_ifc) for path in checked_test_images(raw, [dataset]) for s in scales]
    if not getattr(upscale, "in_process", False):
        return list(pmap(_score_file, tasks, jobs, desc="evaluate"))
    return _evaluate_in_process(upscale, tasks, jobs or os.cpu_count() or 1)


def _evaluate_in_process(upscale: Upscaler, tasks: list, jobs: int) -> list[ImageScore]:
    """Steps 2-3 on the upscaler's device (the ILR image by the torch `imresize` in float64, then the
    network), while `jobs` workers read the next images and score the finished ones. At most 2 * jobs images
    wait to be read and 4 * jobs to be scored: a GPU outruns the workers' IFC, and waiting images would otherwise
    pile up in memory (all of Urban100's at three scales)."""
    import torch

    from rlcsc.imresize import imresize_torch

    device = getattr(upscale, "device", "cpu")
    with pool(jobs) as workers:
        ahead = deque(workers.submit(read_y, *task[1:3]) for task in tasks[: 2 * jobs])
        scored = []
        for i, (dataset, path, s, _, with_ifc) in enumerate(tqdm(tasks, desc="super-resolve", unit="img")):
            y = ahead.popleft().result()
            if i + 2 * jobs < len(tasks):
                ahead.append(workers.submit(read_y, *tasks[i + 2 * jobs][1:3]))
            hr = torch.from_numpy(y).to(device, torch.float64) / 255
            ilr = imresize_torch(imresize_torch(hr, 1 / s), s)
            ref, out = quantize(y / 255, s), quantize(upscale(ilr, s), s)
            scored.append(workers.submit(_compare_task, (dataset, path.name, s, ref, out, with_ifc)))
            if len(scored) > 4 * jobs:
                scored[-4 * jobs - 1].result()  # scored: its images are freed
        return [f.result() for f in tqdm(scored, desc="evaluate", unit="img")]


def summarize(scores: Sequence[ImageScore]) -> dict[str, dict[str, dict[str, float]]]:
    """Dataset means shaped {"Set5": {"x2": {"psnr": .., "ssim": .., "ifc": ..}}}; IFC omitted if not computed."""
    table = pd.DataFrame([asdict(s) for s in scores])
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for (dataset, scale), group in table.groupby(["dataset", "scale"], sort=False):
        cell = {m: float(group[m].mean()) for m in ("psnr", "ssim", "ifc") if group[m].notna().all()}
        summary.setdefault(dataset, {})[f"x{scale}"] = cell
    return summary


def summary_text(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """`summarize`'s means, a line for each test set and scale, with the decimals of the paper's tables."""
    width = max(map(len, summary), default=0)
    return "\n".join(f"{dataset:<{width}} {scale}  PSNR {cell['psnr']:.2f} dB  SSIM {cell['ssim']:.4f}"
                     + (f"  IFC {cell['ifc']:.3f}" if "ifc" in cell else "")
                     for dataset, cells in summary.items() for scale, cell in cells.items())


RESULTS = ("metrics.json", "evaluation.json", "per_image.csv")  # what `write_results` writes


def evaluation_record(datasets: Sequence[str], scales: Sequence[int], ifc: bool, budget: str | None,
                      model: dict | None, precision: str, computed_in: str | None) -> dict:
    """What `evaluation.json` says of an evaluation besides where it ran: the test sets, scales and IFC scored, the
    budget, and the model (`describe_model`) with the precision asked for and the one it computed in; for the
    bicubic baseline (`model` None), which runs no network, `"method": "bicubic"` in place of the precisions."""
    network = {"precision": precision, "computed_in": computed_in} if model else {"method": "bicubic"}
    return {"datasets": list(datasets), "scales": list(scales), "ifc": ifc, "budget": budget, "model": model, **network}


def write_results(scores: Sequence[ImageScore], out: Path, record: dict) -> dict:
    """Write `out/metrics.json` (dataset means), `out/evaluation.json` (`record`: the resolved evaluation
    params and the model evaluated) and `out/per_image.csv`, all or none (`all_atomically`); return the means."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(scores)
    metrics, evaluation, per_image = (out / name for name in RESULTS)
    table = pd.DataFrame([asdict(s) for s in scores]).to_csv(index=False, float_format="%.6f")
    all_atomically({metrics: text_writer(json_text(summary)), evaluation: text_writer(json_text(record)),
                    per_image: text_writer(table)})
    return summary
