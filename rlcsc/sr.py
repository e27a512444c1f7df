"""`rlcsc sr`: super-resolve one image file, keeping its mode (grey, alpha) and bit depth."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import rlcsc
from rlcsc.color import rgb2ycbcr, ycbcr2rgb
from rlcsc.device import inference_precision, pick_device, using_precision
from rlcsc.errors import RlcscError
from rlcsc.imageio import Picture, output_format, read_picture, write_picture
from rlcsc.imresize import imresize
from rlcsc.inference import apply, describe_model, for_inference, load_model

REPO = Path(rlcsc.__file__).resolve().parents[1]
# The models `--model NAME` names, each the recorded run's file, else the pipeline's, and the stage
# that makes the pipeline's; without --model, rlcsc (the K25 model).
NAMED_MODELS = {
    "rlcsc": ((REPO / "runs" / "K25-paper" / "model.pt", REPO / "models" / "K25" / "model.pt"), "train@K25"),
    "vdsr": ((REPO / "runs" / "VDSR-official" / "model.pt", REPO / "models" / "VDSR" / "model.pt"), "convert@VDSR"),
}


# The precision `rlcsc sr` runs in unless --precision says otherwise: the fastest whose Set5 x3 PSNR is
# within 0.001 dB of fp32's (`rlcsc benchmark inference`), where the device computes it natively.
PRECISION = "bf16"
SR_PRECISIONS = ("bf16", "fp32")


def named_model(name: str = "rlcsc") -> Path:
    """The first existing file of the model `name`, or one clear error naming them and how to get one."""
    paths, stage = NAMED_MODELS[name]
    for path in paths:
        if path.is_file():
            return path
    raise RlcscError(f"no {name} model at {' or '.join(map(str, paths))}; make one with `dvc repro {stage}`, "
                     "or pass --model FILE")


def resolve_model(model: str | None) -> Path:
    """--model as given: a file, a name of `NAMED_MODELS`, or None for the default (rlcsc)."""
    if model is None:
        return named_model()
    if model in NAMED_MODELS and not Path(model).exists():
        return named_model(model)
    return Path(model)


def model_summary(path: Path) -> str:
    """What a model file is, in a few words: "K25, budget paper, 1 of 35 epochs", or "vdsr, the released
    VDSR/VDSR_Official.mat (sha256 f6131666...)"."""
    about = describe_model(path)
    source = about["source"]
    if source:
        return f"{about['arch']}, the released {source['group']}/{source['file']} (sha256 {source['sha256'][:8]}...)"
    words = [about["experiment"] or f"unlabelled {about['arch']} model"]
    if about["budget"]:
        words.append(f"budget {about['budget']}")
    if about["epochs_done"] is not None:
        words.append(f"{about['epochs_done']:g} of {about['epochs_planned']:g} epochs")
    if about["status"] not in (None, "completed"):  # stopped where it was asked to: the extent says it
        words.append(about["status"])
    return ", ".join(words)


def super_resolve(model: torch.nn.Module, picture: Picture, scale: float) -> Picture:
    """`picture` upscaled by `scale`: its Y through the network, applied to Y's bicubic interpolation as in
    training and evaluation (a grey image is its own Y); Cb, Cr and alpha bicubic. MATLAB's `imresize`
    and `rgb2ycbcr`/`ycbcr2rgb` in float64; rounding is left to `write_picture`."""
    x = picture.pixels
    if picture.mode in ("L", "LA"):
        out = apply(model, imresize(x if x.ndim == 2 else x[..., 0], scale), progress=True)
    else:
        ycc = imresize(rgb2ycbcr(x[..., :3]), scale)
        ycc[..., 0] = apply(model, ycc[..., 0], progress=True)
        out = ycbcr2rgb(ycc)
    if picture.mode.endswith("A"):
        out = np.dstack([out, imresize(x[..., -1], scale)])
    return replace(picture, pixels=out, note="")


def _check_output(input: Path, output: Path, overwrite: bool) -> None:
    """One clear error if `output` cannot or should not be written: a folder, a missing folder, an existing file."""
    if output.is_dir():
        raise RlcscError(f"-o {output} is a folder; name the output file")
    if not output.parent.is_dir():
        raise RlcscError(f"folder {output.parent} (of -o {output}) does not exist")
    if output.exists() and not overwrite:
        if input.exists() and os.path.samefile(input, output):
            raise RlcscError(f"-o {output} is the input file; name another file, or pass --overwrite to replace it")
        raise RlcscError(f"{output} exists; pass --overwrite to replace it")


def super_resolve_file(input: Path, output: Path, scale: float, model: str | None, overwrite: bool,
                       precision: str = PRECISION) -> str:
    """Upscale image file `input` by `scale` into `output` with the network in `precision` (fp32 where bf16
    is not native: `rlcsc.device.inference_precision`); returns the line that says what was done."""
    if not 2 <= scale <= 4:
        raise RlcscError(f"--scale must be between 2 and 4 (the scales the model was trained on), got {scale:g}")
    if precision not in SR_PRECISIONS:
        raise RlcscError(f"--precision must be one of {', '.join(SR_PRECISIONS)}, got {precision!r}")
    _check_output(input, output, overwrite)
    picture = read_picture(input)
    output_format(output, picture.mode, picture.bits)  # can the output hold it? (before any work)
    model = resolve_model(model)
    about = model_summary(model)
    device = pick_device("auto")
    network = load_model(model, device)  # checked before anything is said of the precision
    precision = inference_precision(device, precision)
    with using_precision(device, "fp32"):  # the layers bf16 leaves in fp32 stay exact on a GPU too
        result = super_resolve(for_inference(network, device, precision), picture, scale)
    write_picture(result, output)
    return f"{input} {picture} -> {output} {result} (model {model}: {about}) in {precision}"
