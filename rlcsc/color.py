"""MATLAB's `rgb2ycbcr` / `ycbcr2rgb` (ITU-R BT.601, studio swing: Y in [16, 235] for uint8)."""

from __future__ import annotations

import numpy as np

from rlcsc.rounding import to_uint8

# MATLAB's matrix for R, G, B in 0..255 (divided by 255 below) and its offset.
_T = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]
)
_OFFSET = np.array([16.0, 128.0, 128.0])


def _lincomb(img: np.ndarray, t: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """out[..., p] = t[p,0]*c0 + t[p,1]*c1 + t[p,2]*c2 + offset[p] for each row p of t, as MATLAB's `imlincomb`."""
    c = np.asarray(img, dtype=np.float64)
    return np.stack(
        [t[p, 0] * c[..., 0] + t[p, 1] * c[..., 1] + t[p, 2] * c[..., 2] + offset[p] for p in range(len(t))],
        axis=-1,
    )


def _from_rgb(img: np.ndarray, rows: slice) -> np.ndarray:
    """The channels `rows` of `rgb2ycbcr(img)`, computing only those."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb2ycbcr needs an (H, W, 3) image, got shape {img.shape}")
    t, offset = _T[rows] / 255, _OFFSET[rows]
    if img.dtype == np.uint8:
        return to_uint8(_lincomb(img, t, offset))
    return _lincomb(img, t, offset / 255)


def rgb2ycbcr(img: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) -> YCbCr. uint8 in 0..255 -> uint8 (rounded); float in [0, 1] -> float64."""
    return _from_rgb(img, slice(None))


def ycbcr2rgb(img: np.ndarray) -> np.ndarray:
    """YCbCr (H, W, 3) -> RGB, the inverse of `rgb2ycbcr`, with the same dtype conventions."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"ycbcr2rgb needs an (H, W, 3) image, got shape {img.shape}")
    tinv = np.linalg.inv(_T)
    if img.dtype == np.uint8:
        return to_uint8(_lincomb(img, 255 * tinv, -(255 * tinv @ _OFFSET)))
    return _lincomb(img, 255 * tinv, -(tinv @ _OFFSET))


def rgb2y(img: np.ndarray) -> np.ndarray:
    """Luma of an image as MATLAB `rgb2ycbcr` gives it; a single-channel image is its own Y."""
    if img.ndim == 2:
        return img
    return _from_rgb(img, slice(0, 1))[..., 0]
