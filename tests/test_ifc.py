"""IFC (`ifcvec.m`) piece by piece: pyramid, block sums, distortion channel, source field, totals."""

from __future__ import annotations

import numpy as np
import pyrtools as pt
import pytest

from rlcsc import ifc


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A smooth-plus-texture test image on 0..255, 97 x 134 (odd, and not a multiple of 3)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:97, 0:134]
    base = 128 + 60 * np.sin(xx / 7) * np.cos(yy / 11) + 20 * rng.standard_normal((97, 134))
    return np.clip(np.floor(base + 0.5), 0, 255)


def test_subbands_equal_pyrtools_steerable_pyramid(image: np.ndarray) -> None:
    pyr = pt.pyramids.SteerablePyramidSpace(image, height=4, order=5, edge_type="reflect1")
    bands = ifc.subbands(image)
    assert sorted(bands) == [(lev, b) for lev in range(4) for b in (0, 3)]
    for key, band in bands.items():
        np.testing.assert_allclose(band, pyr.pyr_coeffs[key], atol=1e-9, rtol=0)


def test_window_sizes_follow_matlab_subband_levels() -> None:
    # MATLAB subbands 25/22 (finest) use 17x17, ..., 7/4 (coarsest) use 3x3
    assert [ifc.window_size(level) for level in range(4)] == [17, 9, 5, 3]


@pytest.mark.parametrize(("h", "w", "win"), [(12, 15, 5), (13, 14, 9), (30, 31, 17)])
def test_block_sums_equal_direct_reflected_sums(h: int, w: int, win: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((h, w))
    got = ifc._block_sums(x, win)
    padded = np.pad(x, win // 2, mode="reflect")  # reflect1: mirror about the edge pixel
    want = np.array(
        [[padded[r : r + win, c : c + win].sum() for c in range(1, w, 3)] for r in range(1, h, 3)]
    )
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_distortion_channel_recovers_gain_and_noise() -> None:
    rng = np.random.default_rng(2)
    y = rng.standard_normal((90, 90)) * 10
    g, vv = ifc.distortion_channel(y, 0.5 * y, 9)
    np.testing.assert_allclose(g, 0.5, atol=1e-9)
    assert vv.max() < 1e-12  # no noise: variance at rounding level (clamped below at tol)
    g, vv = ifc.distortion_channel(y, -y, 9)
    assert np.all(g == 0)  # negative gains are clipped, and all the signal counts as noise
    # ...as the un-normalised sum of squares ss_y, as ifcsub_est_M leaves it (not divided by 81)
    sums = ifc._block_sums
    np.testing.assert_allclose(vv, sums(y * y, 9) - sums(y, 9) ** 2 / 81, rtol=1e-9)


def test_source_field_matches_literal_block_statistics() -> None:
    rng = np.random.default_rng(3)
    y = rng.standard_normal((9, 12))
    ss, eig = ifc.source_field(y)
    vectors = np.array([y[r : r + 3, c : c + 3].ravel(order="F") for r in range(7) for c in range(10)])
    cu = np.cov(vectors.T, bias=True)
    np.testing.assert_allclose(np.sort(eig), np.linalg.eigvalsh(cu), atol=1e-12)
    block = y[3:6, 6:9].ravel(order="F")
    assert ss.shape == (3, 4)
    assert ss[1, 2] == pytest.approx(block @ np.linalg.solve(cu, block) / 9, rel=1e-10)


def test_ifc_orders_distortions(image: np.ndarray) -> None:
    rng = np.random.default_rng(4)
    noise = rng.standard_normal(image.shape)
    light = np.clip(image + 5 * noise, 0, 255)
    heavy = np.clip(image + 25 * noise, 0, 255)
    same, a, b = ifc.ifc(image, image), ifc.ifc(image, light), ifc.ifc(image, heavy)
    assert same > a > b > 0


def test_ifc_rejects_shape_mismatch(image: np.ndarray) -> None:
    with pytest.raises(ValueError, match="one shape"):
        ifc.ifc(image, image[:-1])


@pytest.mark.parametrize("shape", [(ifc.MIN_SIDE - 1, 300), (300, ifc.MIN_SIDE - 1)])
def test_ifc_refuses_an_image_too_small_for_the_reference_pyramid(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(3)
    img = rng.random(shape) * 255
    with pytest.raises(ValueError, match="Cannot build pyramid higher than 3 levels"):
        pt.pyramids.SteerablePyramidSpace(img, height=4, order=5, edge_type="reflect1")
    with pytest.raises(ValueError, match=f"needs at least {ifc.MIN_SIDE} pixels a side"):
        ifc.ifc(img, img)
    least = rng.random((ifc.MIN_SIDE, ifc.MIN_SIDE)) * 255  # the smallest the reference builds, and so does the port
    pt.pyramids.SteerablePyramidSpace(least, height=4, order=5, edge_type="reflect1")
    assert ifc.ifc(least, least) > 0


def test_distortion_channel_estimates_the_noise_variance_per_coefficient() -> None:
    # D = g C + V: with g = 0.5 and white noise of variance 4, vv is near 4 (the residual variance, divided by n)
    rng = np.random.default_rng(7)
    y = rng.standard_normal((90, 90)) * 10
    g, vv = ifc.distortion_channel(y, 0.5 * y + 2 * rng.standard_normal(y.shape), 9)
    assert abs(np.median(g) - 0.5) < 0.02 and abs(np.median(vv) - 4) < 0.5


def test_a_flat_distortion_carries_no_gain_and_the_floor_variance() -> None:
    # ifcsub_est_M: a flat distorted block has g = 0 and vv = 0, then vv(vv < tol) = tol
    y = np.random.default_rng(5).standard_normal((30, 30))
    g, vv = ifc.distortion_channel(y, np.zeros_like(y), 5)
    assert np.all(g == 0) and np.all(vv == ifc.TOL)


def test_ifc_is_ifcvec_sum_in_bits_per_reference_pixel(image: np.ndarray) -> None:
    """ifcvec.m's sum over subbands k = 4, 7, ..., 25 of log2(1 + g^2 s lambda_j / (vv + 1e-10)) over the
    blocks inside ceil(((2^lev + 1) - 1) / 2 / M) of the border, lev = ceil((k - 1) / 6), per reference pixel."""
    rng = np.random.default_rng(6)
    dist = np.clip(image + 10 * rng.standard_normal(image.shape), 0, 255)
    ref_pyr = pt.pyramids.SteerablePyramidSpace(image, height=4, order=5, edge_type="reflect1").pyr_coeffs
    dist_pyr = pt.pyramids.SteerablePyramidSpace(dist, height=4, order=5, edge_type="reflect1").pyr_coeffs
    total = 0.0
    for k in range(4, 26, 3):
        lev = -(-(k - 1) // 6)
        key = (4 - lev, 3 if k in (4, 10, 16, 22) else 0)
        h, w = (s // 3 * 3 for s in ref_pyr[key].shape)
        y, yn = ref_pyr[key][:h, :w], dist_pyr[key][:h, :w]
        g, vv = ifc.distortion_channel(y, yn, 2**lev + 1)
        ss, lam = ifc.source_field(y)
        off = int(np.ceil((2**lev / 2) / 3))
        inner = np.s_[off : g.shape[0] - off, off : g.shape[1] - off]
        for lam_j in lam:
            total += np.log2(1 + g[inner] ** 2 * ss[inner] * lam_j / (vv[inner] + 1e-10)).sum()
    assert ifc.ifc(image, dist) == pytest.approx(total / image.size, rel=1e-9)
