"""`rlcsc sr`: super-resolve image files, keeping each one's mode (grey, alpha) and bit depth."""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import rlcsc
from rlcsc.color import rgb2ycbcr, ycbcr2rgb
from rlcsc.device import inference_precision, inferring, pick_device
from rlcsc.errors import RlcscError
from rlcsc.imageio import (
    FORMATS,
    MODES,
    Header,
    Picture,
    format_of,
    output_format,
    read_header,
    read_picture,
    write_picture,
)
from rlcsc.imresize import imresize
from rlcsc.inference import CPU_TILE, apply, computes_in, describe_model, for_inference, load_model, receptive_radius
from rlcsc.models.rlcsc import RLCSC

REPO = Path(rlcsc.__file__).resolve().parents[1]
# The models `--model NAME` names, each the recorded run's file, else the pipeline's, and the stage
# that makes the pipeline's; without --model, rlcsc (the K25 model).
NAMED_MODELS = {
    "rlcsc": ((REPO / "runs" / "K25-paper" / "model.pt", REPO / "models" / "K25" / "model.pt"), "train@K25"),
    "vdsr": ((REPO / "runs" / "VDSR-official" / "model.pt", REPO / "models" / "VDSR" / "model.pt"), "convert@VDSR"),
}


SR_PRECISIONS = ("bf16", "winograd", "fp32")
NEAR_FP32_DB = 0.001  # how far from fp32's Set5 x3 PSNR the default precision may move a network


def default_precision(network: torch.nn.Module) -> str:
    """The precision `rlcsc sr` runs `network` in unless --precision says otherwise: the fastest whose Set5 x3 PSNR
    stays within `NEAR_FP32_DB` of fp32's, as `rlcsc benchmark inference` measured it on the recorded models
    (`runs/*/inference_cpu.json`): bf16 for RL-CSC, where the device computes it natively (winograd on a CPU
    without it); winograd, fp32's arithmetic up to its rounding, for any other network (VDSR's 18 inner layers
    in bf16 move it further)."""
    return "bf16" if isinstance(network, RLCSC) else "winograd"


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
    if model in NAMED_MODELS and not Path(model).is_file():  # not the package folder `rlcsc/` of a checkout
        return named_model(model)
    if not os.path.lexists(model):
        raise RlcscError(f"model file not found: {model} (nor is it a model's name: {', '.join(NAMED_MODELS)})")
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


def output_paths(inputs: list[Path], output: Path) -> list[Path]:
    """Where each input's result goes: `output` itself for one input, unless it is a folder; else
    `<output>/<the input's name>`, in the format the name says (PNG, named `<stem>.png`, for a format this
    command reads but does not write: GIF, WebP, PGM, ...), with `output` an existing folder. An input that is a
    folder is one clear error."""
    folder = next((i for i in inputs if i.is_dir()), None)
    if folder:
        raise RlcscError(f"{folder} is a folder; name the image files in it (e.g. {folder / '*.png'})")
    if len(inputs) == 1 and not output.is_dir():
        return [output]
    if not output.is_dir():
        raise RlcscError(f"-o {output} is not a folder; with {len(inputs)} images, name the existing folder "
                         "their results go to")
    names = [i.name if i.suffix.lower() in FORMATS else f"{i.stem}.png" for i in inputs]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:
        raise RlcscError(f"two results would be named {twice} in {output} (each takes its image's name), "
                         "so give the images different names")
    return [output / name for name in names]


def _check_output(input: Path, output: Path, overwrite: bool) -> None:
    """One clear error if `output` cannot or should not be written: a missing folder, a name that says no
    format, a folder of the result's name, an existing file."""
    if not output.parent.is_dir():
        what = "is a file, not a folder" if output.parent.exists() else "does not exist"
        raise RlcscError(f"folder {output.parent} (of -o {output}) {what}")
    if output.is_dir():  # the image's name in an -o folder: a file cannot replace it, --overwrite or not
        raise RlcscError(f"{output} is a folder, which {input}'s result cannot replace; move it away")
    if not output.suffix and not output.exists():  # `-o results/` for a folder not made yet
        raise RlcscError(f"-o {output} is no folder, and its name says no image format: make the folder first, or "
                         "end the file's name in .png, .jpg, .bmp or .tif")
    format_of(output)
    if os.path.lexists(output) and not overwrite:  # a link to nothing too: it is replaced, not followed
        if input.exists() and output.exists() and os.path.samefile(input, output):
            raise RlcscError(f"-o {output} is the input file; name another file, or pass --overwrite to replace it")
        raise RlcscError(f"{output} exists; pass --overwrite to replace it")


# Bytes per sample of the output image (each of Y, Cb, Cr, or grey, and alpha) while `super_resolve` runs:
# its float64 copies through `imresize` and the colour conversions (33 to 45 measured by peak memory).
BYTES_PER_SAMPLE = 40
# Feature maps a network holds at once per pixel of a tile, in units of its widest layer, float32: up to
# 6.4 measured on the CPU (DRRN by winograd, whose scratch keeps a zero-bordered copy of a layer's input;
# K25 3.5 in fp32, 4.9 by winograd).
MAPS_PER_PIXEL = 7


def available_memory() -> int:
    """Bytes of memory free for a computation: Linux's estimate (MemAvailable), within the container's
    limit (cgroup v2) and the process's address-space limit (`ulimit -v`) where there are; elsewhere the
    machine's physical memory."""
    try:
        free = int(Path("/proc/meminfo").read_text().split("MemAvailable:")[1].split()[0]) * 1024
    except (OSError, IndexError, ValueError):  # not Linux
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        cgroup = Path("/sys/fs/cgroup")
        limit, used = (cgroup / "memory.max").read_text().strip(), (cgroup / "memory.current").read_text()
        if limit != "max":
            free = min(free, int(limit) - int(used))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit
    address_space = resource.getrlimit(resource.RLIMIT_AS)[0]
    if address_space != resource.RLIM_INFINITY:  # less what the process has mapped already
        mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        free = min(free, address_space - mapped)
    return free


def memory_needed(header: Header, scale: float, model: torch.nn.Module, device: torch.device) -> int:
    """Bytes that super-resolving an image of `header` by `scale` takes: the output's float64 copies, and
    on the CPU the network's feature maps of one tile."""
    height, width = math.ceil(header.height * scale), math.ceil(header.width * scale)
    widest = max(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    side = CPU_TILE + 2 * receptive_radius(model)  # a tile and its context, within the image
    tile = 0 if device.type == "cuda" else min(side, height) * min(side, width) * MAPS_PER_PIXEL * widest * 4
    return BYTES_PER_SAMPLE * height * width * header.channels + tile


def _check_memory(input: Path, header: Header, scale: float, need: int, max_memory: float | None) -> None:
    """One clear error, before the image is decoded, if it needs more memory than `max_memory` GiB (default:
    what is available)."""
    limit = available_memory() if max_memory is None else max_memory * 2**30
    if need > limit:
        out = f"{math.ceil(header.width * scale)}x{math.ceil(header.height * scale)}"
        limit_words = "available" if max_memory is None else "that --max-memory allows"
        raise RlcscError(f"{input} is {header.width}x{header.height}: at x{scale:g} ({out}) it needs about "
                         f"{_amount(need)} of memory, more than the {_amount(limit)} {limit_words}; "
                         f"pass --max-memory {math.ceil(need / 2**30)} to try anyway, or cut the image into parts")


def _amount(size: float) -> str:
    """Bytes to one decimal in the largest of GiB, MiB and KiB in which they read at least 0.1, else in bytes."""
    for unit, power in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 2**power / 10:
            return f"{size / 2**power:.1f} {unit}"
    return f"{size:.0f} bytes"


def super_resolve_files(inputs: list[Path], output: Path, scale: float, model: str | None, overwrite: bool,
                        max_memory: float | None = None, precision: str | None = None) -> Iterator[str]:
    """Upscale each image file of `inputs` by `scale` into `output_paths(inputs, output)` with the network
    in `precision` (default: `default_precision`; bf16 where it is native, else winograd on a CPU and fp32 on a
    GPU; winograd on a GPU, or of a network without a layer wide enough for it, runs in fp32:
    `rlcsc.device.inference_precision`, `rlcsc.inference.computes_in`), yielding a line that says what was
    done as each is written. What can be checked before any work is checked for every image first: the
    outputs, the headers, the model, and the memory each image takes (more than `max_memory` GiB, default
    what is available, is refused from its header, before it is decoded)."""
    if not 2 <= scale <= 4:
        raise RlcscError(f"--scale must be between 2 and 4 (the scales the model was trained on), got {scale:g}")
    if precision is not None and precision not in SR_PRECISIONS:
        raise RlcscError(f"--precision must be one of {', '.join(SR_PRECISIONS)}, got {precision!r}")
    outputs = output_paths(inputs, output)
    for input, out in zip(inputs, outputs):
        _check_output(input, out, overwrite)
    headers = [read_header(input) for input in inputs]
    for input, out, header in zip(inputs, outputs, headers):  # can each output hold its picture?
        try:
            output_format(out, MODES.get(header.channels, "L"), header.bits)
        except RlcscError as err:
            raise RlcscError(f"{input}: {err}") from None
    model = resolve_model(model)
    about = model_summary(model)
    device = pick_device("auto")
    network = load_model(model, device)  # checked before anything is said of the precision
    for input, header in zip(inputs, headers):
        _check_memory(input, header, scale, memory_needed(header, scale, network, device), max_memory)
    precision = computes_in(network, inference_precision(device, precision or default_precision(network)))
    network = for_inference(network, device, precision)
    for i, (input, out) in enumerate(zip(inputs, outputs), 1):
        picture = read_picture(input)
        output_format(out, picture.mode, picture.bits)  # can the output hold it? (before any work on it)
        with inferring(device, precision):
            result = super_resolve(network, picture, scale)
        write_picture(result, out)
        count = f"{i}/{len(inputs)} " if len(inputs) > 1 else ""
        yield f"{count}{input} {picture} -> {out} {result} (model {model}: {about}) in {precision}"
