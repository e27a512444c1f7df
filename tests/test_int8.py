"""int8 inference through ONNX Runtime (`rlcsc.int8`): the inner layers quantised and the layers that touch
the image in fp32, calibrated on training pairs, close to fp32 on a photo; without ONNX Runtime, one line."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rlcsc import int8
from rlcsc.errors import RlcscError
from rlcsc.inference import apply, build, for_inference

from test_precision import NETWORKS, PHOTO, small_residual


@pytest.mark.parametrize("arch,config", NETWORKS)
def test_int8_quantises_the_inner_layers_only(arch: str, config: dict, mirror: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    import onnx

    torch.manual_seed(0)
    model = small_residual(for_inference(build(arch, config), "cpu"))
    calibration = int8.calibration_inputs(mirror, pairs=24)
    assert calibration.shape == (24, 1, 33, 33) and calibration.dtype == np.float32
    int8.quantize(model, calibration, tmp_path / "int8.onnx")
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    made_by = {out: node for node in graph.node for out in node.output}
    inner = {f"{name}.weight" for name, layer in model.named_modules() if layer in set(model.inner_layers())}
    every = {f"{name}.weight" for name, layer in model.named_modules() if isinstance(layer, torch.nn.Conv2d)}
    seen = set()
    for conv in (node for node in graph.node if node.op_type == "Conv"):
        weight = made_by.get(conv.input[1])
        quantized = weight is not None and weight.op_type == "DequantizeLinear"
        name = weight.input[0].removesuffix("_quantized") if quantized else conv.input[1]
        assert quantized == (name in inner), name
        seen.add(name)
    assert seen == every
    out = int8.Int8Network(tmp_path / "int8.onnx")(PHOTO, 3)
    exact = apply(model, PHOTO)
    # the residual reaches 0.05 on this photo: int8 moves it by under 0.004 (0.001 on average), a graph that
    # lost a layer or the identity by up to 0.05
    error = np.abs(out - exact)
    assert out.shape == PHOTO.shape and 0 < error.max() < 0.008 and error.mean() < 0.0015


def test_calibration_reads_checked_training_images(mirror: Path, tmp_path: Path) -> None:
    first, again = int8.calibration_inputs(mirror, pairs=16), int8.calibration_inputs(mirror, pairs=16)
    assert np.array_equal(first, again) and not np.array_equal(first, int8.calibration_inputs(mirror, 16, seed=1))
    assert 0 <= first.min() and first.max() <= 1.1 and len(np.unique(first.reshape(16, -1), axis=0)) == 16
    with pytest.raises(RlcscError, match=r"^missing image .*T91.*: run `rlcsc download"):
        int8.calibration_inputs(tmp_path)


def test_without_onnx_runtime_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # an import of it fails, as where it is not installed
    assert not int8.available()
    with pytest.raises(RlcscError, match=r"^int8 needs ONNX Runtime: pip install 'rlcsc\[int8\]'$"):
        int8.quantize(build("vdsr", {"layers": 3, "features": 4}), np.zeros((1, 1, 33, 33), np.float32),
                      tmp_path / "int8.onnx")
    assert not (tmp_path / "int8.onnx").exists()
