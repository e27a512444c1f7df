"""How the route from a network's output to the metrics moves them (`rlcsc benchmark output-route`).

This package's protocol (`rlcsc.evaluate`) scores a network's Y channel directly: rounded to uint8 once.
A method's published result images take another route: the Y estimate is joined to the bicubic Cb and Cr
of the same test image, converted to RGB (`ycbcr2rgb`) and saved as uint8, and the scorer reads that file
back and takes its Y (`rgb2ycbcr`, rounded again). Bicubic is unaffected (its published numbers are made
on Y directly); a network's PSNR, SSIM and IFC move by the second rounding. This module scores both
routes on the same output, image by image, so that a published number made one way or the other can be
told apart by measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from rlcsc.color import rgb2y, rgb2ycbcr, ycbcr2rgb
from rlcsc.crop import modcrop
from rlcsc.device import machine
from rlcsc.errors import RlcscError
from rlcsc.evaluate import compare, ilr_pair, quantize
from rlcsc.imageio import read_image
from rlcsc.imresize import imresize
from rlcsc.inference import Network
from rlcsc.manifest import TEST_SETS, checked_images
from rlcsc.parallel import pmap
from rlcsc.provenance import stamp
from rlcsc.rounding import im2uint

ROUTES = ("y", "rgb")


def through_rgb(rgb: np.ndarray, sr: np.ndarray, scale: int) -> np.ndarray:
    """The uint8 Y that a scorer reads back from the result image written for the Y estimate `sr` of the
    uint8 image `rgb` (`modcrop`ped): Cb and Cr interpolated as the input's Y was (`imresize` down and up by
    `scale`), `ycbcr2rgb`, rounded to uint8, then `rgb2ycbcr` of that file, rounded. A grey image is saved
    as its rounded Y."""
    if rgb.ndim == 2:
        return im2uint(sr).astype(np.uint8)
    chroma = imresize(imresize(rgb2ycbcr(rgb.astype(np.float64) / 255)[..., 1:], 1 / scale), scale)
    return rgb2y(im2uint(ycbcr2rgb(np.dstack([sr, chroma]))).astype(np.uint8))


def _score(task: tuple[str, Path, int, Network]) -> dict:
    dataset, path, scale, network = task
    hr, ilr = ilr_pair(path, scale)
    sr = network(ilr, scale)
    rgb = modcrop(read_image(path), scale)
    ref = quantize(hr, scale)
    routes = {"y": quantize(sr, scale), "rgb": through_rgb(rgb, sr, scale)[scale:-scale, scale:-scale]}
    row = {"dataset": dataset, "image": path.name, "scale": scale}
    for route, out in routes.items():
        row |= dict(zip((f"{m}_{route}" for m in ("psnr", "ssim", "ifc")), compare(ref, out, True)))
    return row


def output_route(model: Path, raw: Path, datasets: Sequence[str], scales: Sequence[int],
                 jobs: int | None = None) -> dict:
    """Mean PSNR, SSIM and IFC of the network in `model` on each dataset and scale by both routes (`y`: this
    package's protocol; `rgb`: through a saved RGB result image), the rgb route minus the y route, and the
    machine, commit and date of the measurement."""
    if not model.is_file():
        raise RlcscError(f"model file not found: {model}")
    datasets, scales = list(dict.fromkeys(datasets)), list(dict.fromkeys(scales))  # each scored once
    unknown = [d for d in datasets if d not in TEST_SETS]
    if unknown:
        raise RlcscError(f"unknown test set {unknown[0]!r}; choose from {list(TEST_SETS)}")
    network = Network(model)
    ran_on = {**machine(network.device), **stamp()}  # the commit as the measurement starts
    tasks = [(d, path, s, network) for d in datasets for path in checked_images(raw, [d]) for s in scales]
    rows = pd.DataFrame(list(pmap(_score, tasks, jobs, desc="output route")))
    cells: dict = {}
    for (dataset, scale), group in rows.groupby(["dataset", "scale"], sort=False):
        cell = {f"{m}_{r}": float(group[f"{m}_{r}"].mean()) for m in ("psnr", "ssim", "ifc") for r in ROUTES}
        cell |= {f"{m}_rgb_minus_y": cell[f"{m}_rgb"] - cell[f"{m}_y"] for m in ("psnr", "ssim", "ifc")}
        cells.setdefault(dataset, {})[f"x{scale}"] = cell | {"images": len(group)}
    return {"what": "output route", "model": str(model), "routes": {"y": "this package's protocol: the network's Y "
            "rounded once", "rgb": "the Y joined to bicubic Cb, Cr, written as an RGB uint8 image and read back"},
            "machine": ran_on, "metrics": cells}
