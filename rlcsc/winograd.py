"""Winograd's minimal filtering F(6x6, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural
Networks", 2016): the CPU's fp32 path for the 3x3 convolutions between the image's first and last layers
(for RL-CSC W1, the K applications of S and W2 of eqs. 9-11) whose input times output channels reach `WIDE`.

Each 6x6 block of an output is computed from the 8x8 window of input around it as
`A^T [(G w G^T) * (B^T d B)] A`, summed over input channels: 64 products per block and pair of channels
where a direct convolution takes 324, so S's arithmetic falls from 9 to 1.78 multiply-adds per weight and
output pixel. The sums over channels are 64 batched matrix products; the transforms are small matrix
products. The matrices follow from the interpolation points 0, 1, -1, 2, -2, 1/2, -1/2 and infinity: fp32
holds the entries of A^T and B^T (multiples of 1/32 and 1/4) exactly, and G transforms the weights once, in
float64; the result is the convolution's up to fp32 rounding (`rlcsc benchmark inference` measures how far
it moves the output from fp32's).
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from torch import nn

POINTS = tuple(map(Fraction, (0, 1, -1, 2, -2, "1/2", "-1/2")))  # and infinity
TILE = len(POINTS) + 1  # input pixels per window side: 8
BLOCK = TILE - 2  # output pixels per block side: 6
ROWS = 3  # block rows transformed at once, which bounds the memory their transforms take
# Input times output channels from which a layer is computed by F(6x6, 3x3): its transforms cost in
# proportion to the channels, what it saves in proportion to their product, so a narrow layer (VDSR's 64
# in and out) gains little or nothing by it and stays direct (`rlcsc benchmark winograd` times both).
WIDE = 96 * 96


def _coefficients(roots: list[Fraction]) -> list[Fraction]:
    """Coefficients (constant first) of the monic polynomial with `roots`."""
    c = [Fraction(1)]
    for r in roots:
        c = [a - r * b for a, b in zip([Fraction(0), *c], [*c, Fraction(0)])]
    return c


def transforms(points: tuple[Fraction, ...] = POINTS, r: int = 3) -> tuple[torch.Tensor, ...]:
    """(A^T, G, B^T) in float64 of F(m, r), m = len(points) + 2 - r, for the finite `points` and infinity:
    A^T evaluates the output polynomial at the points, G the filter (scaled by the Lagrange denominators),
    and B^T's rows are the coefficients of M(x) / (x - p) and of M(x), M = prod (x - p), which interpolate
    the products back (Winograd's transposition of Toom-Cook)."""
    n = len(points) + 1
    m = n - r + 1
    at = [[p**i for p in points] + [Fraction(int(i == m - 1))] for i in range(m)]
    scale = [math.prod((p - q for q in points if q != p), start=Fraction(1)) for p in points]
    g = [[p**k / s for k in range(r)] for p, s in zip(points, scale)] + [[Fraction(int(k == r - 1)) for k in range(r)]]
    bt = [_coefficients([q for q in points if q != p]) + [Fraction(0)] for p in points] + [_coefficients(list(points))]
    return tuple(torch.tensor([[float(v) for v in row] for row in a], dtype=torch.float64) for a in (at, g, bt))


class Scratch:
    """The temporaries of the `WinogradConv` layers of one network, kept from call to call in flat buffers
    (one per temporary, grown to its largest use; one forward at a time). Allocated afresh, they would have
    the system map and zero their pages again for every band of every layer."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """The buffer `name` as an uninitialised tensor of `shape`, with `like`'s dtype and device."""
        size = math.prod(shape)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < size or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = self.buffers[name] = like.new_empty(size)
        return buffer[:size].view(shape)


class WinogradConv(nn.Module):
    """A 3x3 convolution of stride 1 and zero padding 1 (`conv`'s weights and bias), computed by F(6x6, 3x3)
    in float32, its temporaries in `scratch` (its own unless given one)."""

    def __init__(self, conv: nn.Conv2d, scratch: Scratch | None = None) -> None:
        super().__init__()
        if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1) or conv.groups != 1 \
                or conv.dilation != (1, 1):
            raise ValueError(f"Winograd F(6x6, 3x3) computes a 3x3 convolution of stride 1 and padding 1, not {conv}")
        at, g, bt = transforms()
        w = conv.weight.detach().double()
        u = (g @ w @ g.T).permute(2, 3, 1, 0)  # (8, 8, cin, cout): the transformed filters
        self.register_buffer("u", u.reshape(TILE**2, conv.in_channels, conv.out_channels).float().contiguous())
        self.register_buffer("at", at.float())
        self.register_buffer("bt", bt.float())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().float().clone())
        self.scratch = scratch or Scratch()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, cin, h, w = x.shape
        cout = self.u.shape[2]
        take = self.scratch.take
        th, tw = -(-h // BLOCK), -(-w // BLOCK)  # blocks down and across; the last may overhang the image
        xp = take("input", (n, BLOCK * th + 2, BLOCK * tw + 2, cin), x)  # zero-bordered, channels last
        xp[:, 1 : h + 1, 1 : w + 1] = x.permute(0, 2, 3, 1)
        xp[:, 0] = xp[:, h + 1 :] = xp[:, :, 0] = xp[:, :, w + 1 :] = 0
        out = x.new_empty(n, BLOCK * th, BLOCK * tw, cout)
        for i0 in range(0, th, ROWS):
            i1 = min(i0 + ROWS, th)
            blocks = n * (i1 - i0) * tw
            windows = xp[:, BLOCK * i0 : BLOCK * i1 + 2].unfold(1, TILE, BLOCK).unfold(2, TILE, BLOCK)
            d = take("d", (TILE, TILE, n, i1 - i0, tw, cin), x).copy_(windows.permute(4, 5, 0, 1, 2, 3))
            bd = torch.matmul(self.bt, d.view(TILE, -1), out=take("bd", (TILE, TILE * blocks * cin), x))
            v = torch.matmul(self.bt, bd.view(TILE, TILE, -1), out=take("v", (TILE, TILE, blocks * cin), x))  # B^T d B
            products = torch.bmm(v.view(TILE**2, blocks, cin), self.u,  # summed over input channels
                                 out=take("products", (TILE**2, blocks, cout), x))
            ap = torch.matmul(self.at, products.view(TILE, TILE, -1), out=take("ap", (TILE, BLOCK, blocks * cout), x))
            y = torch.matmul(self.at, ap.view(TILE, -1), out=take("y", (BLOCK, BLOCK * blocks * cout), x))  # A^T [.] A
            out[:, BLOCK * i0 : BLOCK * i1].view(n, i1 - i0, BLOCK, tw, BLOCK, cout).copy_(
                y.view(BLOCK, BLOCK, n, i1 - i0, tw, cout).permute(2, 3, 0, 4, 1, 5))
        if self.bias is not None:
            out += self.bias
        return out[:, :h, :w].permute(0, 3, 1, 2)


def by_winograd(conv: nn.Conv2d) -> bool:
    """Whether `winograd_inside` computes the inner layer `conv` by F(6x6, 3x3): at least `WIDE` input times
    output channels."""
    return conv.in_channels * conv.out_channels >= WIDE


def winograd_inside(model: nn.Module) -> nn.Module:
    """`model` (in place) with the convolutions of its `inner_layers` of at least `WIDE` input times output
    channels computed by `WinogradConv`, all with one `Scratch`; narrower ones, and those that read or write the
    image, stay direct."""
    inner = set(filter(by_winograd, model.inner_layers()))
    scratch = Scratch()
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if child in inner:
                setattr(parent, child_name, WinogradConv(child, scratch))
    return model
