"""MATLAB's conversion of doubles to integers, written once: round half away from zero, then saturate.

`uint8(x)` and `uint16(x)` of a double in MATLAB round to the nearest integer, halves away from
zero, and clip to the type's range (NaN becomes 0); `im2uint8` / `im2uint16` first scale [0, 1] to
that range. Every
rounding in the project (imresize of uint8 images, `rgb2ycbcr`, the evaluation protocol, `rlcsc sr`'s
output) goes through these.
"""

from __future__ import annotations

import numpy as np


def matlab_round(x: np.ndarray, bits: int = 8) -> np.ndarray:
    """MATLAB's `uint8(x)` (bits = 8) or `uint16(x)` (bits = 16), as float64."""
    return np.clip(np.floor(np.nan_to_num(np.asarray(x, np.float64), nan=0.0) + 0.5), 0, 2**bits - 1)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """MATLAB's `uint8(x)` of a double array."""
    return matlab_round(x).astype(np.uint8)


def im2uint(x: np.ndarray, bits: int = 8) -> np.ndarray:
    """MATLAB's `im2uint8` (bits = 8) or `im2uint16` (bits = 16) of a [0, 1] image, as float64."""
    return matlab_round(np.asarray(x, np.float64) * (2**bits - 1), bits)
