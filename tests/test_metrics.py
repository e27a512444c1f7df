"""PSNR and SSIM as in the MATLAB test scripts (`compute_psnr.m`, `ssim_index.m`)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from rlcsc.metrics import gaussian_window, psnr, ssim
from rlcsc.rounding import im2uint


def test_im2uint_rounds_half_up_and_clips() -> None:
    y = np.array([-0.1, 0, 0.5 / 255, 1.49 / 255, 127.5 / 255, 1, 1.2, np.nan, np.inf, -np.inf])
    np.testing.assert_array_equal(im2uint(y), [0, 0, 1, 1, 128, 255, 255, 0, 255, 0])  # as MATLAB's im2uint8


def test_psnr_known_values() -> None:
    a = np.zeros((8, 8))
    assert psnr(a, a + 1) == pytest.approx(20 * np.log10(255))
    b = a.copy()
    b[0, 0] = 8  # MSE = 64 / 64 = 1
    assert psnr(a, b) == pytest.approx(20 * np.log10(255))
    assert psnr(a, a + 10) == pytest.approx(20 * np.log10(25.5))


def test_gaussian_window_is_fspecial() -> None:
    g = gaussian_window()
    w = np.outer(g, g)
    x = np.arange(-5, 6)
    direct = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(w, direct / direct.sum(), atol=1e-16)


def test_ssim_identical_is_one_and_matches_skimage_gaussian_valid() -> None:
    rng = np.random.default_rng(0)
    ref = np.floor(rng.random((40, 53)) * 256)
    noisy = np.clip(ref + rng.normal(0, 12, ref.shape).round(), 0, 255)
    assert ssim(ref, ref) == pytest.approx(1.0, abs=1e-12)
    # scikit-image's Gaussian SSIM averages over the same valid region (borders of 5 cropped)
    want = structural_similarity(
        ref, noisy, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim(ref, noisy) == pytest.approx(want, abs=1e-10)
    assert ssim(ref, noisy) < ssim(ref, np.clip(ref + rng.normal(0, 3, ref.shape).round(), 0, 255))


def test_ssim_rejects_images_smaller_than_window() -> None:
    with pytest.raises(ValueError, match="11x11"):
        ssim(np.zeros((10, 20)), np.zeros((10, 20)))


def test_im2uint_inverts_every_level() -> None:
    # MATLAB: im2uint8(double(k) / 255) == k for every uint8 k, and im2uint16 likewise for every uint16 k
    np.testing.assert_array_equal(im2uint(np.arange(256) / 255), np.arange(256))
    np.testing.assert_array_equal(im2uint(np.arange(65536) / 65535, 16), np.arange(65536))
    np.testing.assert_array_equal(im2uint(np.array([0.5, 1.2]), 16), [32768, 65535])


def test_ssim_of_an_11x11_image_is_its_one_gaussian_window() -> None:
    """The smallest image SSIM takes: one window, the statistics of eq. 13-14 of Wang et al. weighted by it."""
    rng = np.random.default_rng(1)
    x, y = np.floor(rng.random((11, 11)) * 256), np.floor(rng.random((11, 11)) * 256)
    g = np.outer(gaussian_window(), gaussian_window())
    mx, my = (g * x).sum(), (g * y).sum()
    vx, vy, cxy = (g * (x - mx) ** 2).sum(), (g * (y - my) ** 2).sum(), (g * (x - mx) * (y - my)).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    want = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim(x, y) == pytest.approx(want, abs=1e-12)
