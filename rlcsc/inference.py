"""Running a trained network on whole images: model files, devices and tiling."""

from __future__ import annotations

import hashlib
import json
import typing
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rlcsc.checksums import SUMS, read_sums, verify_file
from rlcsc.device import bf16_inside, inference_precision, inferring
from rlcsc.errors import RlcscError
from rlcsc.models.drrn import DRRN, DRRNConfig
from rlcsc.models.rlcsc import RLCSC, RLCSCConfig
from rlcsc.models.vdsr import VDSR, VDSRConfig
from rlcsc.winograd import by_winograd, winograd_inside

ARCHS = {"rlcsc": (RLCSC, RLCSCConfig), "drrn": (DRRN, DRRNConfig), "vdsr": (VDSR, VDSRConfig)}
# The largest networks made: recursions, units or layers, and feature maps; far above the paper's (K = 48,
# m = 256), below what never ends or exhausts a machine. The networks restore one channel, Y.
MAX_DEPTH, MAX_WIDTH = 1000, 4096
MAX_SIZE = {"recursions": MAX_DEPTH, "units": MAX_DEPTH, "layers": MAX_DEPTH, "features": MAX_WIDTH,
            "codes": MAX_WIDTH, "channels": 1}


def build(arch: str, config: dict) -> torch.nn.Module:
    """A network of architecture `arch` ("rlcsc" | "drrn" | "vdsr") from its config fields, each of its
    type (a model file's config is checked here) and within `MAX_SIZE`."""
    if arch not in ARCHS:
        raise RlcscError(f"unknown architecture {arch!r}; choose from {sorted(ARCHS)}")
    cls, cfg = ARCHS[arch]
    if not isinstance(config, dict):
        raise RlcscError(f"a network's config must be a mapping of its sizes, got {type(config).__name__}")
    for key, hint in typing.get_type_hints(cfg).items():
        if key not in config:
            continue
        value = config[key]
        if type(value) is not hint:  # an int is not a bool, nor a bool an int
            raise RlcscError(f"the {arch} network's {key} must be {'true or false' if hint is bool else 'an integer'}, "
                             f"got {value!r}")
        if hint is int and not 1 <= value <= MAX_SIZE[key]:
            allowed = "1" if MAX_SIZE[key] == 1 else f"from 1 to {MAX_SIZE[key]}"
            raise RlcscError(f"the {arch} network's {key} must be {allowed}, got {value}")
    return cls(cfg(**config))


def network_sha256(arch: str, config: dict, model: dict[str, torch.Tensor]) -> str:
    """The SHA-256 of what a network computes: its architecture, its config and every weight of `model`
    (name, type, shape and bytes, whatever the memory layout)."""
    digest = hashlib.sha256(json.dumps([arch, config], sort_keys=True).encode())
    for name in sorted(model):
        w = model[name].detach().cpu().contiguous()
        digest.update(f"{name} {w.dtype} {list(w.shape)}\n".encode())
        digest.update(w.flatten().view(torch.uint8).numpy())
    return digest.hexdigest()


def model_state(model: torch.nn.Module) -> dict:
    """What a model file holds: architecture name, config fields, weights (plain tensors), and their
    `network_sha256`, which every load verifies."""
    arch = next(name for name, (cls, _) in ARCHS.items() if isinstance(model, cls))
    state = {"arch": arch, "config": asdict(model.cfg), "model": model.state_dict()}
    return {**state, "network_sha256": network_sha256(**state)}


def load_torch(path: Path) -> object | None:
    """What `torch.save` wrote to the file `path` (tensors and plain values only, on the CPU), or None
    when it is not such a file; a file the system would not read, or memory it would not give, is its own error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, MemoryError):
        raise
    except Exception:  # torch.load raises many types for a file that is not one of its own
        return None


def _read_model_file(path: Path) -> dict:
    """The contents of a model file, or one clear error saying what the file is instead."""
    expected = "expected a model.pt written by `rlcsc train`"
    if path.is_dir():
        raise RlcscError(f"{path} is a folder; {expected}")
    if not path.exists():
        raise RlcscError(f"model file not found: {path}")
    if not path.is_file():  # a FIFO or a device would never end
        raise RlcscError(f"{path} is not a regular file; {expected}")
    state = load_torch(path)
    if state is None:
        raise RlcscError(f"{path} is not a PyTorch file; {expected}")
    if isinstance(state, dict) and "optimizer" in state and "arch" not in state:
        raise RlcscError(f"{path} is a training checkpoint, not a model; use the model.pt beside it")
    if not isinstance(state, dict) or not {"arch", "config", "model"} <= set(state):
        what = f"a mapping of {sorted(state)[:6]}" if isinstance(state, dict) else type(state).__name__
        raise RlcscError(f"{path} holds {what}, not a model; {expected}")
    _check_sha256(path, state)
    return state


def _check_sha256(path: Path, state: dict) -> None:
    """The network in `state` is the one whose `network_sha256` the file carries; a file written before
    model files carried one (a recorded run's) must match the `SHA256SUMS` beside it instead."""
    remedy = _remedy(path, state)
    digest = state.get("network_sha256")
    if digest is None:
        real = path.resolve()  # a link to a recorded run's model.pt: the SHA256SUMS beside the file itself
        sums = read_sums(real.parent)
        if real.name not in sums:
            raise RlcscError(f"{path} carries no SHA-256 of its network (written before model files had one) and "
                             f"no {SUMS} beside it lists it; load it from the run folder it came from (or copy that "
                             f"folder's {SUMS} beside it), else {remedy}")
        verify_file(real, sums[real.name], remedy)
        return
    try:
        actual = network_sha256(state["arch"], state["config"], state["model"])
    except (AttributeError, TypeError, ValueError, RuntimeError):  # a damaged config or weights of another kind
        actual = None
    if actual != digest:
        raise RlcscError(f"corrupt {path}: its network differs from the SHA-256 it carries; {remedy}")


def _remedy(path: Path, state: dict) -> str:
    """What writes the model file `path` again, as far as the file says."""
    source, experiment = state.get("source"), state.get("experiment")
    if (path.parent / SUMS).is_file():
        return f"restore it from the commit that recorded it (`git checkout -- {path}`)"
    if isinstance(source, dict) and isinstance(source.get("group"), str):
        return f"convert it again (`dvc repro convert@{source['group']}`)"
    if isinstance(experiment, str):
        return f"train it again (`dvc repro train@{experiment}`)"
    return "write it again (`rlcsc train` or `rlcsc convert`)"


def load_model(path: Path, device: torch.device | str = "cpu", precision: str = "fp32") -> torch.nn.Module:
    """Load a model file written by `rlcsc train` or `rlcsc convert`, ready for inference on `device` in
    `precision` (`for_inference`)."""
    state = _read_model_file(path)
    try:
        model = build(state["arch"], state["config"])
        model.load_state_dict(state["model"])
    except RlcscError as err:
        raise RlcscError(f"{path}: {err}") from None
    except (TypeError, RuntimeError) as err:
        raise RlcscError(f"{path}: its weights do not fit its network config: "
                         f"{' '.join(str(err).split())[:300]}") from None
    if not all(torch.isfinite(w).all() for w in state["model"].values()):
        raise RlcscError(f"{path}: its weights are not all finite; expected a model.pt written by `rlcsc train`")
    return for_inference(model, device, precision)


LAYER_SWAPS = {"bf16": bf16_inside, "winograd": winograd_inside}  # precisions that replace the inner layers


def for_inference(model: torch.nn.Module, device: torch.device | str, precision: str = "fp32") -> torch.nn.Module:
    """`model` in eval mode on `device`, its inner layers in bfloat16 when `precision` is bf16
    (`rlcsc.device.bf16_inside`) and by Winograd's F(6x6, 3x3) when it is winograd
    (`rlcsc.winograd.winograd_inside`; which precision a device should run is `inference_precision`'s to
    say); on the CPU with its weights channels-last, a layout whose convolutions oneDNN runs faster there
    (the same sums up to fp32 rounding; `rlcsc benchmark evaluate` times a whole evaluation)."""
    cpu = torch.device(device).type == "cpu"
    model = model.to(device, memory_format=torch.channels_last if cpu else torch.preserve_format).eval()
    inside = LAYER_SWAPS.get(precision)
    return inside(model) if inside else model


def computes_in(model: torch.nn.Module, precision: str) -> str:
    """The precision `for_inference(model, device, precision)` computes in, for a `precision` the device runs
    (`rlcsc.device.inference_precision`): fp32 for winograd where none of `model`'s inner layers is wide enough
    for it (`rlcsc.winograd.by_winograd`: VDSR's), else `precision`."""
    if precision == "winograd" and not any(map(by_winograd, model.inner_layers())):
        return "fp32"
    return precision


SOURCE = ("group", "file", "sha256")  # what a converted model's `source` names of the released file
# What a model file may say of itself beside its network, each of a kind (or None), in words for an error.
DESCRIBED = {"experiment": (str, "a name"), "budget": (str, "a name"), "status": (str, "a word"),
             "epochs_done": ((int, float), "a number"), "epochs_planned": ((int, float), "a number"),
             "source": (dict, f"a mapping of {', '.join(SOURCE)}")}


def describe_model(path: Path) -> dict:
    """What a model file says of itself: network, and the experiment, budget, status and extent (epochs
    done of those planned) of its training, or the released file it was converted from (`source`); each
    checked to be of its kind (`DESCRIBED`), which the network's SHA-256 does not cover."""
    state = _read_model_file(path)
    about = {key: state.get(key) for key in DESCRIBED}
    for key, (kind, words) in DESCRIBED.items():
        if about[key] is not None and not _of_kind(about[key], kind):
            raise RlcscError(f"{path}: its {key} is {str(about[key])[:60]!r}, not {words}; expected a model.pt "
                             "written by `rlcsc train` or `rlcsc convert`")
    return {"path": str(path), "arch": state["arch"], "config": state["config"], **about}


def _of_kind(value: object, kind: type | tuple[type, ...]) -> bool:
    """Whether `value` is of `kind` (a bool is no number), a mapping naming each of `SOURCE` in words."""
    if isinstance(value, bool) or not isinstance(value, kind):
        return False
    return not isinstance(value, dict) or all(isinstance(value.get(k), str) for k in SOURCE)


CPU_TILE, GPU_TILE = 512, 1024  # the side of the tiles `apply` computes at once


def receptive_radius(model: torch.nn.Module) -> int:
    """Pixels of context each output needs on each side: one per 3x3 layer."""
    return model.depth


@torch.no_grad()
def apply(model: torch.nn.Module, ilr: np.ndarray | torch.Tensor, tile: int | None = None,
          progress: bool = False, window: tuple[slice, slice] | None = None) -> np.ndarray:
    """The network's output (float64) for one 2-D float image, or for its `window` (rows, cols) alone,
    computed in overlapping tiles of `tile` pixels (default: 1024 on a GPU, so a test image is one
    tile, or two for the four Urban100 images longer than 1024 on a side; 512 on the CPU); each tile
    carries `receptive_radius` pixels of context where the image has them, so the result equals those
    pixels of the untiled computation of the whole image up to the rounding of fp32 kernels, whose order of
    summation can depend on a tensor's size (so, rarely, a pixel's uint8 rounds the other way),
    while memory stays bounded (and a figure's crop of a large image costs only the crop). `progress` shows a
    bar over the tiles."""
    device = next(model.parameters()).device
    tile = tile or (GPU_TILE if device.type == "cuda" else CPU_TILE)
    if isinstance(ilr, np.ndarray):
        ilr = torch.from_numpy(np.ascontiguousarray(ilr))
    x = ilr.to(device, torch.float32)[None, None]
    h, w = ilr.shape
    rows, cols = window or (slice(None), slice(None))
    (top, bottom, _), (left, right, _) = rows.indices(h), cols.indices(w)
    pad = receptive_radius(model)
    out = np.empty((bottom - top, right - left), np.float64)
    tiles = [(r, c) for r in range(top, bottom, tile) for c in range(left, right, tile)]
    for r, c in tqdm(tiles, desc="network", unit="tile", disable=not progress):
        rh, cw = min(tile, bottom - r), min(tile, right - c)
        r0, c0 = max(r - pad, 0), max(c - pad, 0)
        y = model(x[..., r0 : min(r + rh + pad, h), c0 : min(c + cw + pad, w)])[0, 0].double().cpu().numpy()
        out[r - top : r - top + rh, c - left : c - left + cw] = y[r - r0 : r - r0 + rh, c - c0 : c - c0 + cw]
    return out


class Network:
    """An `Upscaler` for `rlcsc.evaluate` that runs a model file (loaded on first use) in the precision
    that `precision` gives on `device` for its network (`rlcsc.device.inference_precision` and `computes_in`,
    resolved here, once): on the CPU fp32 for tf32 and fp32, and winograd for winograd, or for bf16 where it
    is not native; on a GPU TF32 convolutions for "tf32" only (`rlcsc.device.inferring`).

    On the CPU it runs inside the evaluation's worker processes; on a GPU (`in_process`) the forward
    passes run in the calling process, and only the metrics are spread over processes.
    """

    def __init__(self, path: Path, device: str = "cpu", precision: str = "tf32") -> None:
        self.path, self.device = Path(path), device
        self.precision = computes_in(load_model(self.path), inference_precision(device, precision))
        self._model: torch.nn.Module | None = None

    @property
    def in_process(self) -> bool:
        return self.device != "cpu"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model": None}

    def __call__(self, ilr: np.ndarray, scale: int) -> np.ndarray:
        if self._model is None:
            self._model = load_model(self.path, self.device, self.precision)
        with inferring(self.device, self.precision):
            return apply(self._model, ilr)

