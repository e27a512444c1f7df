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
