"""PSNR and SSIM on the Y channel as the DRRN/MemNet MATLAB test scripts compute them.

Both take two images on the 0..255 scale (already quantised by `rlcsc.rounding.im2uint` and shaved), the
reference first, and work in float64.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d


def psnr(ref: np.ndarray, img: np.ndarray) -> float:
    """20 log10(255 / RMSE) over all pixels (`compute_psnr.m`)."""
    diff = np.asarray(ref, np.float64) - np.asarray(img, np.float64)
    return float(20 * np.log10(255 / np.sqrt(np.mean(diff * diff))))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """1-D factor of MATLAB's `fspecial('gaussian', size, sigma)` (the 2-D window is its outer product)."""
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """`filter2(g' * g, img, 'valid')` for a symmetric separable window."""
    r = len(g) // 2
    out = correlate1d(correlate1d(img, g, axis=0, mode="constant"), g, axis=1, mode="constant")
    return out[r : img.shape[0] - r, r : img.shape[1] - r]


def ssim(ref: np.ndarray, img: np.ndarray, k1: float = 0.01, k2: float = 0.03, peak: float = 255) -> float:
    """Mean SSIM of Wang et al.'s `ssim_index.m`: 11x11 Gaussian (sigma 1.5), valid region, no downsampling."""
    x, y = np.asarray(ref, np.float64), np.asarray(img, np.float64)
    if min(x.shape) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {x.shape}")
    g = gaussian_window()
    c1, c2 = (k1 * peak) ** 2, (k2 * peak) ** 2
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    s_xx = _filter_valid(x * x, g) - mu_xx
    s_yy = _filter_valid(y * y, g) - mu_yy
    s_xy = _filter_valid(x * y, g) - mu_xy
    ssim_map = ((2 * mu_xy + c1) * (2 * s_xy + c2)) / ((mu_xx + mu_yy + c1) * (s_xx + s_yy + c2))
    return float(ssim_map.mean())
