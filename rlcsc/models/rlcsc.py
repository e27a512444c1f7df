"""RL-CSC (Section 3, Figure 2): feature extraction, convolutional LISTA, residual reconstruction.

    y     = ReLU(F1 * ReLU(F0 * I))                      (eq. 8)
    z_0   = ReLU(W1 * y)
    z_k+1 = ReLU(W1 * y + S * z_k),  k = 0 .. K-1          (eq. 9-10; biases are the thresholds)
    R     = H * ReLU(W2 * z_K)                           (eq. 11)
    out   = I + R                                        (eq. 12, global residual learning)

All convolutions are 3x3 with zero padding and biases; S is shared across the K recursions, so
the depth is K + 5 (eq. 13) while the parameter count does not depend on K.
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
    channels: int = 1  # c: the Y channel


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    """A 3x3 convolution with bias and He initialisation (zero mean, variance 2 / (9 cout))."""
    conv = nn.Conv2d(cin, cout, 3, padding=1)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (9 * cout)))
    nn.init.zeros_(conv.bias)
    return conv


class RLCSC(nn.Module):
    """The RL-CSC network; input and output are (B, c, H, W) interpolated / restored images."""

    def __init__(self, cfg: RLCSCConfig = RLCSCConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        n, m, c = cfg.features, cfg.codes, cfg.channels
        self.f0, self.f1 = conv3x3(c, n), conv3x3(n, n)
        self.w1, self.s = conv3x3(n, m), conv3x3(m, m)
        self.w2, self.h = conv3x3(m, n), conv3x3(n, c)

    @property
    def depth(self) -> int:
        """Number of convolution layers on the longest path: K + 5 (eq. 13)."""
        return self.cfg.recursions + 5

    def zero_last_layer(self) -> None:
        """Set H to zero: the network then starts as the identity (residual) or zero map."""
        nn.init.zeros_(self.h.weight)
        nn.init.zeros_(self.h.bias)

    def sparse_codes(self, x: torch.Tensor, keep_all: bool = False) -> list[torch.Tensor]:
        """z_K (eq. 9), or all of z_0 .. z_K when `keep_all` (to inspect their sparsity)."""
        y = F.relu(self.f1(F.relu(self.f0(x))))  # eq. 8
        wy = self.w1(y)  # W1 * y is computed once and reused by every recursion
        z = F.relu(wy)
        codes = [z]
        for _ in range(self.cfg.recursions):
            z = F.relu(wy + self.s(z))
            codes = codes + [z] if keep_all else [z]
        return codes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.h(F.relu(self.w2(self.sparse_codes(x)[-1])))  # eq. 11
        return x + r if self.cfg.residual else r
