"""DRRN (Tai et al., CVPR 2017), the recursive residual network that Tables 2 and 4 compare with.

An entry convolution, then one recursive block (B1) of U residual units. Every unit is pre-activation BN-ReLU-conv
twice; the two convolutions are shared by all units (local residual learning: each unit adds the block's
input H0), and the output adds the interpolated input (global residual learning). 128 filters,
3x3; depth 2U + 2 (B1U9: 20 layers, B1U25: 52 layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rlcsc.models.rlcsc import conv3x3


@dataclass(frozen=True)
class DRRNConfig:
    """B1U`units`: one recursive block of `units` residual units."""

    units: int = 9
    features: int = 128
    channels: int = 1


def _pre_activation(features: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(features), nn.ReLU(inplace=False))


class DRRN(nn.Module):
    """DRRN B1U`units`; input and output are (B, c, H, W) interpolated / restored images."""

    def __init__(self, cfg: DRRNConfig = DRRNConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        n = cfg.features
        self.entry = conv3x3(cfg.channels, n, bias=True)
        self.conv_a, self.conv_b = conv3x3(n, n, bias=True), conv3x3(n, n, bias=True)  # shared by every unit
        self.act_a = nn.ModuleList(_pre_activation(n) for _ in range(cfg.units))
        self.act_b = nn.ModuleList(_pre_activation(n) for _ in range(cfg.units))
        self.exit = nn.Sequential(_pre_activation(n), conv3x3(n, cfg.channels, bias=True))

    @property
    def depth(self) -> int:
        """Convolution layers on the longest path: 2U + 2."""
        return 2 * self.cfg.units + 2

    def inner_layers(self) -> tuple[nn.Module, ...]:
        """The recursive block's two shared convolutions, between the entry and exit layers that read and
        write the image: what bf16 inference rounds (`rlcsc.device.bf16_inside`)."""
        return self.conv_a, self.conv_b

    def zero_last_layer(self) -> None:
        """Set the exit convolution to zero: the network then starts as the identity."""
        for t in self.exit[-1].parameters():
            nn.init.zeros_(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = self.entry(x)
        h = h0
        for act_a, act_b in zip(self.act_a, self.act_b):
            h = self.conv_b(act_b(self.conv_a(act_a(h)))) + h0
        return x + self.exit(h)
