"""VDSR (Kim, Lee, Lee, CVPR 2016), the comparison method of Tables 1-2 and Figures 1, 4-6, as its
authors released it.

    x_1   = ReLU(W_1 * I + b_1)
    x_l   = ReLU(W_l * x_l-1 + b_l),  l = 2 .. D-1
    out   = I + W_D * x_D-1 + b_D                       (global residual learning)

D = 20 3x3 convolutions with zero padding 1 and 64 feature maps: 665,921 parameters. RL-CSC's
Section 4 reads this network as the unfolded solver its own design replaces.

`from_matconvnet` converts the authors' MatConvNet file (`VDSR_Official.mat`, see
`rlcsc/weights.tsv`): cell arrays `weight{l}` (H x W x C_in x C_out; `vl_nnconv` correlates, as
`conv2d` does, so the kernels are not flipped) and `bias{l}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlcsc.errors import RlcscError
from rlcsc.models.rlcsc import conv3x3


@dataclass(frozen=True)
class VDSRConfig:
    """The released network: 20 layers of 64 features on the Y channel."""

    layers: int = 20
    features: int = 64
    channels: int = 1


class VDSR(nn.Module):
    """VDSR; input and output are (B, c, H, W) interpolated / restored images."""

    def __init__(self, cfg: VDSRConfig = VDSRConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        sizes = [cfg.channels] + [cfg.features] * (cfg.layers - 1) + [cfg.channels]
        self.convs = nn.ModuleList(conv3x3(a, b, bias=True) for a, b in pairwise(sizes))

    @property
    def depth(self) -> int:
        """Convolution layers on the longest path: D."""
        return self.cfg.layers

    def inner_layers(self) -> tuple[nn.Module, ...]:
        """Every convolution but the first and the last, which read and write the image: what bf16
        inference rounds (`rlcsc.device.bf16_inside`)."""
        return tuple(self.convs[1:-1])

    def zero_last_layer(self) -> None:
        """Set the last convolution to zero: the network then starts as the identity."""
        for t in self.convs[-1].parameters():
            nn.init.zeros_(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for conv in self.convs[:-1]:
            h = conv(h).relu_()  # in place on the convolution's fresh output: the same numbers, one tensor fewer
        return x + self.convs[-1](h)


def from_matconvnet(path: Path) -> VDSR:
    """The network of a MatConvNet VDSR file: `model.weight{l}` (H x W x C_in x C_out, C_out = 1
    squeezed away in the last) and `model.bias{l}`, float32."""
    from scipy.io import loadmat

    try:
        model = loadmat(path, squeeze_me=False)["model"][0, 0]
        weights, biases = [w for w in model["weight"][0]], [b for b in model["bias"][0]]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise RlcscError(f"{path} is not a MatConvNet VDSR file (a struct `model` with cells weight, bias): "
                         f"{' '.join(str(err).split())[:200]}") from None
    kernels = [w.reshape(*w.shape[:3], -1) for w in weights]  # restore the squeezed C_out = 1
    net = VDSR(VDSRConfig(layers=len(kernels), features=kernels[0].shape[3], channels=kernels[0].shape[2]))
    state = {}
    for i, (w, b) in enumerate(zip(kernels, biases)):
        state[f"convs.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1), np.float32))
        state[f"convs.{i}.bias"] = torch.from_numpy(np.asarray(b, np.float32).reshape(-1))
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise RlcscError(f"{path}: its layers do not form a VDSR network: {' '.join(str(err).split())[:300]}") from None
    return net
