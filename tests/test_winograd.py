"""Winograd's F(6x6, 3x3) (`rlcsc.winograd`): its matrices, its convolution against torch's, and the networks
whose inner layers it computes (`for_inference(..., "winograd")`)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from rlcsc.inference import apply, build, for_inference
from rlcsc.winograd import Scratch, WinogradConv, transforms

from test_precision import NETWORKS, PHOTO, small_residual


def test_the_transforms_compute_six_outputs_of_a_3_tap_correlation_exactly() -> None:
    """A^T [(G g) * (B^T d)] is the correlation of eight inputs d with three taps g, in exact arithmetic (float64
    here, to its rounding)."""
    at, g, bt = transforms()
    assert at.shape == (6, 8) and g.shape == (8, 3) and bt.shape == (8, 8)
    rng = np.random.default_rng(0)
    for _ in range(10):
        taps, data = torch.from_numpy(rng.normal(size=3)), torch.from_numpy(rng.normal(size=8))
        expected = torch.stack([(taps * data[i : i + 3]).sum() for i in range(6)])
        torch.testing.assert_close(at @ ((g @ taps) * (bt @ data)), expected, rtol=0, atol=1e-13)
    assert torch.equal(at.float().double(), at) and torch.equal(bt.float().double(), bt)  # exact in fp32


@pytest.mark.parametrize("shape", [(1, 5, 4, 4), (2, 5, 13, 18), (1, 7, 1, 30), (1, 3, 29, 9)])
@pytest.mark.parametrize("bias", [False, True])
def test_it_is_torchs_convolution_up_to_fp32_rounding(shape: tuple[int, ...], bias: bool) -> None:
    """Any height and width (multiples of the 6x6 blocks or not, and more than its 3 block rows at once),
    batch, channels and bias; in the channels-last layout of the CPU's inference as in the default one."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(shape[1], 6, 3, padding=1, bias=bias)
    x = torch.randn(shape)
    with torch.no_grad():
        exact = F.conv2d(x.double(), conv.weight.double(), None if conv.bias is None else conv.bias.double(), padding=1)
        for layout in (torch.contiguous_format, torch.channels_last):
            out = WinogradConv(conv)(x.contiguous(memory_format=layout))
            assert out.shape == exact.shape and out.dtype == torch.float32
            error = (out.double() - exact).abs().max().item()
            assert 0 < error < 1e-5 * exact.abs().max().item(), error


def test_layers_sharing_one_scratch_compute_what_each_computes_alone() -> None:
    """Two layers of other widths take their temporaries from one `Scratch`: the first, largest calls allocate
    them, and the calls of other sizes that follow, in turn, reuse them and get each layer's own results."""
    torch.manual_seed(0)
    convs = torch.nn.Conv2d(5, 6, 3, padding=1), torch.nn.Conv2d(6, 4, 3, padding=1, bias=False)
    scratch = Scratch()
    shared, alone = [WinogradConv(c, scratch) for c in convs], [WinogradConv(c) for c in convs]
    with torch.no_grad():
        for i, shape in enumerate([(2, 5, 25, 31), (1, 5, 7, 8), (1, 5, 31, 19), (2, 5, 25, 31)]):
            x = torch.randn(shape)
            assert torch.equal(shared[1](shared[0](x)), alone[1](alone[0](x)))
            if i == 0:
                first = {name: b.data_ptr() for name, b in scratch.buffers.items()}
    assert {name: b.data_ptr() for name, b in scratch.buffers.items()} == first


@pytest.mark.parametrize("conv", [torch.nn.Conv2d(2, 2, 5, padding=2), torch.nn.Conv2d(2, 2, 3, stride=2, padding=1),
                                  torch.nn.Conv2d(2, 2, 3), torch.nn.Conv2d(2, 2, 3, padding=2, dilation=2),
                                  torch.nn.Conv2d(2, 2, 3, padding=1, groups=2)])
def test_it_refuses_a_convolution_it_does_not_compute(conv: torch.nn.Conv2d) -> None:
    with pytest.raises(ValueError, match="3x3 convolution of stride 1 and padding 1"):
        WinogradConv(conv)


@pytest.mark.usefixtures("winograd_everywhere")
@pytest.mark.parametrize("arch,config", NETWORKS)
def test_a_network_computes_its_inner_layers_by_winograd_and_its_output_as_in_fp32(arch: str, config: dict) -> None:
    """The inner layers become `WinogradConv`, the layers that read and write the image stay torch's; the output
    stays within a thousandth of a grey level of fp32's (bf16's moves by up to a quarter)."""
    torch.manual_seed(0)
    model = small_residual(build(arch, config))
    exact = apply(for_inference(copy.deepcopy(model), "cpu"), PHOTO)
    fast = for_inference(copy.deepcopy(model), "cpu", "winograd")
    inner = fast.inner_layers()
    assert inner and all(isinstance(m, WinogradConv) for m in inner)
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d)) - len(inner)
    error = np.abs(apply(fast, PHOTO) - exact).max()
    assert 0 < error < 0.001 / 255, error


@pytest.mark.parametrize("arch,config,by_winograd", [
    ("rlcsc", {"recursions": 1, "features": 128, "codes": 256}, [True, True, True]),  # the paper's K25: W1, S, W2
    ("rlcsc", {"recursions": 1, "features": 128, "codes": 128}, [True, True, True]),  # Figure 8's m = 128
    ("rlcsc", {"recursions": 1, "features": 64, "codes": 128}, [False, True, False]),
    ("rlcsc", {"recursions": 1, "features": 64, "codes": 96}, [False, True, False]),
    ("drrn", {"units": 1, "features": 128}, [True, True]),
    ("vdsr", {"layers": 4, "features": 64}, [False, False]),  # VDSR's width
])
def test_only_layers_of_wide_inputs_and_outputs_are_computed_by_winograd(arch: str, config: dict,
                                                                         by_winograd: list[bool]) -> None:
    fast = for_inference(build(arch, config), "cpu", "winograd")
    assert [isinstance(m, WinogradConv) for m in fast.inner_layers()] == by_winograd
