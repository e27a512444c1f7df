"""MATLAB's `imresize(..., 'bicubic')`, exactly, in numpy (data stages) and torch (training, evaluation).

MATLAB resizes one dimension at a time with a cubic kernel (a = -0.5) that is widened by 1/scale
when shrinking (antialiasing), maps output pixel x (1-based) to input coordinate
u = x / scale + 0.5 * (1 - 1/scale) with the *given* scale, mirrors indices at the borders and
drops taps whose weights are zero everywhere. A uint8 image stays uint8 after every pass (rounded
half away from zero, clipped), as MATLAB's `imresizemex` does. Both back ends share the
contribution matrices built here, so they agree to float rounding.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from rlcsc.rounding import matlab_round

if TYPE_CHECKING:
    import torch

KERNEL_WIDTH = 4.0


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's `cubic`)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * (
        (ax > 1) & (ax <= 2)
    )


def output_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """MATLAB's output size for a scale factor: `ceil(scale * size)`."""
    return math.ceil(scale * size[0]), math.ceil(scale * size[1])


@lru_cache(maxsize=256)
def contributions(in_len: int, out_len: int, scale: float) -> sp.csr_matrix:
    """Weights of MATLAB's `contributions()` as an (out_len, in_len) sparse matrix.

    Row i holds the normalised kernel weights of output pixel i; taps that fall outside the
    image are folded back by symmetric (mirror) indexing, so duplicate indices add up.
    """
    width = KERNEL_WIDTH / scale if scale < 1 else KERNEL_WIDTH
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    dist = u[:, None] - idx
    w = scale * cubic(scale * dist) if scale < 1 else cubic(dist)
    w /= w.sum(axis=1, keepdims=True)
    keep = np.any(w != 0, axis=0)
    w, idx = w[:, keep], idx[:, keep].astype(np.int64)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = mirror[np.mod(idx - 1, 2 * in_len)]
    rows = np.repeat(np.arange(out_len), idx.shape[1])
    m = sp.csr_matrix((w.ravel(), (rows, idx.ravel())), shape=(out_len, in_len))
    m.sum_duplicates()
    return m


def _plan(
    in_size: tuple[int, int], scale: float | None, size: tuple[int, int] | None
) -> list[tuple[int, sp.csr_matrix]]:
    """The (dimension, matrix) passes in MATLAB's order: smaller scale factor first."""
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale or size")
    if size is None:
        scales = (float(scale), float(scale))
        size = output_size(in_size, float(scale))
    else:
        scales = (size[0] / in_size[0], size[1] / in_size[1])
    if min(size) < 1 or min(in_size) < 1:
        raise ValueError(f"cannot resize {in_size} to {size}")
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)
    return [(d, contributions(in_size[d], size[d], scales[d])) for d in order]


def imresize(
    img: np.ndarray, scale: float | None = None, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) uint8 or float image like MATLAB's bicubic `imresize`.

    Give either `scale` (output `ceil(scale * size)`) or an explicit `size` (rows, cols).
    uint8 in -> uint8 out (rounded after each pass); float in -> float64 out.
    """
    is_uint8 = img.dtype == np.uint8
    out = np.asarray(img, dtype=np.float64)
    for dim, m in _plan(img.shape[:2], scale, size):
        moved = np.moveaxis(out, dim, 0)
        flat = moved.reshape(moved.shape[0], -1)
        res = np.asarray(m @ flat).reshape((m.shape[0],) + moved.shape[1:])
        out = np.moveaxis(res, 0, dim)
        if is_uint8:
            out = matlab_round(out)
    return out.astype(np.uint8) if is_uint8 else out


def imresize_torch(
    x: torch.Tensor, scale: float | None = None, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Batched `imresize` of a float tensor (..., H, W) on any device; dense matmuls per pass."""
    import torch

    out = x
    for dim, m in _plan(tuple(x.shape[-2:]), scale, size):
        w = torch.as_tensor(m.toarray(), dtype=x.dtype, device=x.device)
        out = torch.matmul(w, out) if dim == 0 else torch.matmul(out, w.T)
    return out
