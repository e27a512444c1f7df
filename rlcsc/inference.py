"""Running a trained network on whole images: model files, devices and tiling."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rlcsc.device import bf16_inside, inference_precision, using_precision
from rlcsc.errors import RlcscError
from rlcsc.models.drrn import DRRN, DRRNConfig
from rlcsc.models.rlcsc import RLCSC, RLCSCConfig
from rlcsc.models.vdsr import VDSR, VDSRConfig

ARCHS = {"rlcsc": (RLCSC, RLCSCConfig), "drrn": (DRRN, DRRNConfig), "vdsr": (VDSR, VDSRConfig)}


def build(arch: str, config: dict) -> torch.nn.Module:
    """A network of architecture `arch` ("rlcsc" | "drrn" | "vdsr") from its config fields."""
    if arch not in ARCHS:
        raise RlcscError(f"unknown architecture {arch!r}; choose from {sorted(ARCHS)}")
    cls, cfg = ARCHS[arch]
    small = [f"{k} {v}" for k, v in config.items() if type(v) is int and v < 1]
    if small:
        raise RlcscError(f"a network's sizes must be at least 1, got {', '.join(small)}")
    return cls(cfg(**config))


def model_state(model: torch.nn.Module) -> dict:
    """What a model file holds: architecture name, config fields and weights (plain tensors)."""
    arch = next(name for name, (cls, _) in ARCHS.items() if isinstance(model, cls))
    return {"arch": arch, "config": asdict(model.cfg), "model": model.state_dict()}


def load_torch(path: Path) -> object | None:
    """What `torch.save` wrote to the file `path` (tensors and plain values only, on the CPU), or None
    when it is not such a file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch.load raises many types for a file that is not one of its own
        return None


def _read_model_file(path: Path) -> dict:
    """The contents of a model file, or one clear error saying what the file is instead."""
    expected = "expected a model.pt written by `rlcsc train`"
    if path.is_dir():
        raise RlcscError(f"{path} is a folder; {expected}")
    if not path.exists():
        raise RlcscError(f"model file not found: {path}")
    state = load_torch(path)
    if state is None:
        raise RlcscError(f"{path} is not a PyTorch file; {expected}")
    if isinstance(state, dict) and "optimizer" in state and "arch" not in state:
        raise RlcscError(f"{path} is a training checkpoint, not a model; use the model.pt beside it")
    if not isinstance(state, dict) or not {"arch", "config", "model"} <= set(state):
        what = f"a mapping of {sorted(state)[:6]}" if isinstance(state, dict) else type(state).__name__
        raise RlcscError(f"{path} holds {what}, not a model; {expected}")
    return state


def load_model(path: Path, device: torch.device | str = "cpu", precision: str = "fp32") -> torch.nn.Module:
    """Load a model file written by `rlcsc train` or `rlcsc convert`, ready for inference on `device` in
    `precision` (`for_inference`)."""
    state = _read_model_file(path)
    try:
        model = build(state["arch"], state["config"])
        model.load_state_dict(state["model"])
    except (TypeError, RuntimeError) as err:
        raise RlcscError(f"{path}: its weights do not fit its network config: {' '.join(str(err).split())[:300]}") from None
    if not all(torch.isfinite(w).all() for w in state["model"].values()):
        raise RlcscError(f"{path}: its weights are not all finite; expected a model.pt written by `rlcsc train`")
    return for_inference(model, device, precision)


def for_inference(model: torch.nn.Module, device: torch.device | str, precision: str = "fp32") -> torch.nn.Module:
    """`model` in eval mode on `device`, its inner layers in bfloat16 when `precision` is bf16
    (`rlcsc.device.bf16_inside`; which precision a device should run is `inference_precision`'s to say);
    on the CPU with its weights channels-last, a layout whose convolutions oneDNN runs faster there (the
    same sums up to fp32 rounding; `rlcsc benchmark evaluate` times a whole evaluation)."""
    cpu = torch.device(device).type == "cpu"
    model = model.to(device, memory_format=torch.channels_last if cpu else torch.preserve_format).eval()
    return bf16_inside(model) if precision == "bf16" else model


def describe_model(path: Path) -> dict:
    """What a model file says of itself: network, and the experiment, budget, status and extent (epochs
    done of those planned) of its training, or the released file it was converted from (`source`)."""
    state = _read_model_file(path)
    keys = ("experiment", "budget", "status", "epochs_done", "epochs_planned", "source")
    return {"path": str(path), "arch": state["arch"], "config": state["config"], **{k: state.get(k) for k in keys}}


def receptive_radius(model: torch.nn.Module) -> int:
    """Pixels of context each output needs on each side: one per 3x3 layer."""
    return model.depth


@torch.no_grad()
def apply(model: torch.nn.Module, ilr: np.ndarray | torch.Tensor, tile: int | None = None,
          progress: bool = False, window: tuple[slice, slice] | None = None) -> np.ndarray:
    """The network's output (float64) for one 2-D float image, or for its `window` (rows, cols) alone,
    computed in overlapping tiles of `tile` pixels (default: 1024 on a GPU, so a test image is one
    tile; 512 on the CPU); each tile carries `receptive_radius` pixels of context where the image has
    them, so the result equals those pixels of the untiled computation of the whole image while memory
    stays bounded (and a figure's crop of a large image costs only the crop). `progress` shows a bar
    over the tiles."""
    device = next(model.parameters()).device
    tile = tile or (1024 if device.type == "cuda" else 512)
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
    that `precision` gives on `device` (`rlcsc.device.inference_precision`, resolved here, once): on the
    CPU fp32 unless bf16 is asked for and native; on a GPU TF32 convolutions unless "fp32".

    On the CPU it runs inside the evaluation's worker processes; on a GPU (`in_process`) the forward
    passes run in the calling process, and only the metrics are spread over processes.
    """

    def __init__(self, path: Path, device: str = "cpu", precision: str = "tf32") -> None:
        self.path, self.device, self.precision = Path(path), device, inference_precision(device, precision)
        self._model: torch.nn.Module | None = None

    @property
    def in_process(self) -> bool:
        return self.device != "cpu"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model": None}

    def __call__(self, ilr: np.ndarray, scale: int) -> np.ndarray:
        if self._model is None:
            self._model = load_model(self.path, self.device, self.precision)
        with using_precision(self.device, self.precision):
            return apply(self._model, ilr)

