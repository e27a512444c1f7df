"""int8 inference on a CPU through ONNX Runtime: a variant that `rlcsc benchmark inference` measures
against fp32 and bf16 (`pip install 'rlcsc[int8]'`), and not a precision of `rlcsc sr`.

The network is exported to ONNX and quantised statically (`quantize`): weights to int8, one scale per
output channel; activations to uint8 with one scale per tensor, each tensor of the K recursions its
own, calibrated on the interpolated inputs of training pairs cut as Section 5.2 cuts them
(`calibration_inputs`), never on test images; the calibrated range of each activation is its
`PERCENTILE`-th percentile, so a few outliers do not coarsen the steps of all the rest. As with bf16
(`rlcsc.device.bf16_inside`), only the `inner_layers` are quantised (for RL-CSC W1, the K applications
of S and W2 of eqs. 9-11 with their sums and ReLUs); the layers that read and write the image (F0 and
F1 of eq. 8, H of eq. 11) and the residual sum of eq. 12 stay fp32.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlcsc.color import rgb2y
from rlcsc.data.augment import AugmentParams, training_files
from rlcsc.data.patches import make_pairs
from rlcsc.errors import RlcscError
from rlcsc.imageio import read_image

PERCENTILE = 99.999  # the calibrated range of an activation: this percentile of its values
CALIBRATION_PAIRS = 256  # 33x33 training pairs, at scales 2, 3 and 4 alike
BATCH = 16  # calibration pairs per forward pass, whose activations are held at once
PER_IMAGE = 8  # calibration pairs from one training image
TRAINING_SETS = AugmentParams().datasets  # the 291 training images


def _onnxruntime():  # noqa: ANN202 (the module, or one clear error)
    try:
        import onnxruntime
        import onnxruntime.quantization  # noqa: F401
        import onnxscript  # noqa: F401 (torch's ONNX exporter)
    except ImportError:
        raise RlcscError("int8 needs ONNX Runtime: pip install 'rlcsc[int8]'") from None
    if not hasattr(torch.onnx, "ONNXProgram"):
        raise RlcscError(f"int8 needs torch 2.5 or newer to export the network, not {torch.__version__}")
    return onnxruntime


def version() -> str:
    """ONNX Runtime's version."""
    return _onnxruntime().__version__


def available() -> bool:
    """Whether ONNX Runtime (the `int8` extra) is installed, with a torch that exports to it."""
    try:
        _onnxruntime()
    except RlcscError:
        return False
    return True


def calibration_inputs(raw: Path, pairs: int = CALIBRATION_PAIRS, seed: int = 0, size: int = 33) -> np.ndarray:
    """(pairs, 1, size, size) float32: the interpolated inputs of `pairs` pairs cut as Section 5.2 cuts them
    (`make_pairs`, stride = size) from the training images as they are (no flip, rotation or downsizing),
    `PER_IMAGE` at random from each of a random draw (`seed`) of the images under `raw` (checked against the
    manifest), the images taking scales 2, 3, 4 in turn."""
    rng = np.random.default_rng(seed)
    files = training_files(raw, AugmentParams())
    chosen: list[np.ndarray] = []
    for i, index in enumerate(rng.permutation(len(files))):
        if sum(map(len, chosen)) >= pairs:
            break
        _, ilr, _ = make_pairs(rgb2y(read_image(files[index])), 2 + i % 3, size, size)
        chosen.append(ilr[rng.permutation(len(ilr))[:PER_IMAGE]])
    return np.concatenate(chosen)[:pairs, None].astype(np.float32)


def export(model: nn.Module, path: Path) -> None:
    """Write (a copy of) `model` as an ONNX graph taking (batch, 1, height, width) images of any size."""
    model = copy.deepcopy(model).float().to(memory_format=torch.contiguous_format).eval()
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    program = torch.onnx.export(model, (torch.rand(2, 1, 40, 40),), dynamo=True, dynamic_shapes=(dims,),
                                input_names=["ilr"], output_names=["sr"], verbose=False)
    program.save(str(path))


def outer_nodes(graph_path: Path, model: nn.Module) -> list[str]:
    """The nodes of the ONNX graph that stay fp32: the convolutions of the layers outside
    `model.inner_layers()` and every node that reads one of their outputs (their ReLUs, the residual sum)."""
    import onnx

    inner = {f"{name}.weight" for name, layer in model.named_modules() if layer in set(model.inner_layers())}
    graph = onnx.load(str(graph_path)).graph
    outer = [n for n in graph.node if n.op_type == "Conv" and n.input[1] not in inner]
    outputs = {o for n in outer for o in n.output}
    return [n.name for n in outer] + [n.name for n in graph.node if outputs.intersection(n.input)]


def quantize(model: nn.Module, calibration: np.ndarray, out: Path) -> None:
    """Write to `out` the int8 ONNX graph of `model` (see the module's docstring), its activations
    calibrated on `calibration` ((N, 1, h, w) float32 inputs)."""
    _onnxruntime()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Batches(CalibrationDataReader):
        """The calibration inputs in batches of `BATCH`, calibrated one batch at a time (`set_range`), so
        that only one batch's activations are held at once: ONNX Runtime's histograms add them up."""

        def __init__(self) -> None:
            self.batches = [calibration[i : i + BATCH] for i in range(0, len(calibration), BATCH)]
            self.set_range(0, len(self.batches))

        def __len__(self) -> int:
            return len(self.batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.todo = iter(self.batches[start_index:end_index])

        def get_next(self) -> dict | None:
            batch = next(self.todo, None)
            return None if batch is None else {"ilr": batch}

    with tempfile.TemporaryDirectory() as tmp, _quiet():
        fp32 = Path(tmp) / "fp32.onnx"
        export(model, fp32)
        quantize_static(str(fp32), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=outer_nodes(fp32, model), calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"CalibPercentile": PERCENTILE, "WeightSymmetric": True, "CalibStridedMinMax": 1})


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporter's and the quantiser's printed lines off stdout, where `rlcsc benchmark` writes its JSON,
    and mute their logged advice (below errors) and their warnings."""
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class Int8Network:
    """An `Upscaler` (as `rlcsc.inference.Network`) that runs an int8 graph written by `quantize` with
    ONNX Runtime on the CPU, on every core; the session opens on first use."""

    def __init__(self, path: Path) -> None:
        self.path, self._session = Path(path), None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_session": None}

    def __call__(self, ilr: np.ndarray, scale: int) -> np.ndarray:
        if self._session is None:
            ort = _onnxruntime()
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        x = np.asarray(ilr, np.float32)[None, None]
        return self._session.run(None, {"ilr": x})[0][0, 0].astype(np.float64)
