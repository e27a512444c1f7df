"""RL-CSC (Section 3, Figure 2): feature extraction, convolutional LISTA, residual reconstruction.

    y     = ReLU(F1 * ReLU(F0 * I))                      (eq. 8)
    z_0   = ReLU(W1 * y)
    z_k+1 = ReLU(W1 * y + S * z_k),  k = 0 .. K-1          (eq. 9-10, threshold theta = 0)
    R     = H * ReLU(W2 * z_K)                           (eq. 11)
    out   = I + R                                        (eq. 12, global residual learning)

All convolutions are 3x3 with zero padding; S is shared across the K recursions, so the depth is
K + 5 (eq. 13) while the parameter count does not depend on K. The paper's network has no biases:
its counts, "about 1,329k" (Section 5.2 sizes) and "approximately 592k" (m = 128), are the weights
alone (1,329,408 and 592,128; a bias on every convolution would add 897 and 641), its training recipe
repeats the optimizer, schedule and clipping of the bias-free PyTorch VDSR code, and with eq. 10's
threshold at zero h is the plain ReLU it says it uses. `bias=True` adds a bias to every convolution,
the learned thresholds of eq. 10 (theta = -bias).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class RLCSCConfig:
    """Sizes of Section 5.2: n = 128 feature maps, m = 256 sparse-code maps, K = 25 recursions."""

    recursions: int = 25
    features: int = 128  # n: F0, F1 and the input of W1 / output of W2
    codes: int = 256  # m: W1, S and the input of W2
    residual: bool = True  # eq. 12; off for Table 3's "no residual" model
    bias: bool = False  # a bias on every convolution (not the paper's network)
    channels: int = 1  # c: the Y channel


def conv3x3(cin: int, cout: int, bias: bool) -> nn.Conv2d:
    """A 3x3 convolution with He initialisation (zero mean, variance 2 / (9 cout), Section 5.2)
    and, if `bias`, a bias starting at zero."""
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=bias)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (9 * cout)))
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


class RLCSC(nn.Module):
    """The RL-CSC network; input and output are (B, c, H, W) interpolated / restored images."""

    def __init__(self, cfg: RLCSCConfig = RLCSCConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        n, m, c, b = cfg.features, cfg.codes, cfg.channels, cfg.bias
        self.f0, self.f1 = conv3x3(c, n, b), conv3x3(n, n, b)
        self.w1, self.s = conv3x3(n, m, b), conv3x3(m, m, b)
        self.w2, self.h = conv3x3(m, n, b), conv3x3(n, c, b)

    @property
    def depth(self) -> int:
        """Number of convolution layers on the longest path: K + 5 (eq. 13)."""
        return self.cfg.recursions + 5

    def inner_layers(self) -> tuple[nn.Module, ...]:
        """The convolutional LISTA (W1, S, W2 of eqs. 9-11), between the layers that read and write the
        image (F0, F1 of eq. 8, H of eq. 11): what bf16 inference rounds (`rlcsc.device.bf16_inside`)."""
        return self.w1, self.s, self.w2

    def zero_last_layer(self) -> None:
        """Set H to zero: the network then starts as the identity (residual) or zero map."""
        for t in self.h.parameters():
            nn.init.zeros_(t)

    def sparse_codes(self, x: torch.Tensor, keep_all: bool = False) -> list[torch.Tensor]:
        """z_K (eq. 9), or all of z_0 .. z_K when `keep_all` (to inspect their sparsity).

        Sums and ReLUs work in place on each convolution's fresh output: the same numbers as
        `F.relu(wy + self.s(z))`, one new tensor per recursion instead of three.
        """
        y = self.f1(self.f0(x).relu_()).relu_()  # eq. 8
        wy = self.w1(y)  # W1 * y is computed once and reused by every recursion
        z = F.relu(wy)
        codes = [z]
        for _ in range(self.cfg.recursions):
            z = self.s(z).add_(wy).relu_()  # eqs. 9-10
            codes = codes + [z] if keep_all else [z]
        return codes

    def residual_image(self, x: torch.Tensor) -> torch.Tensor:
        """R of eq. 11: the output before the identity branch is added."""
        return self.h(self.w2(self.sparse_codes(x)[-1]).relu_())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.residual_image(x)
        return x + r if self.cfg.residual else r  # eq. 12
