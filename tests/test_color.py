"""MATLAB `rgb2ycbcr` / `ycbcr2rgb` (BT.601), `modcrop` and `shave`."""

from __future__ import annotations

import numpy as np

from rlcsc.color import rgb2y, rgb2ycbcr, ycbcr2rgb
from rlcsc.crop import modcrop, shave


def test_rgb2ycbcr_uint8_known_colours() -> None:
    rgb = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [10, 200, 30]]], np.uint8)
    ycc = rgb2ycbcr(rgb)
    assert ycc.dtype == np.uint8
    np.testing.assert_array_equal(ycc[0, 0], [235, 128, 128])
    np.testing.assert_array_equal(ycc[0, 1], [16, 128, 128])
    # red: Y = 16 + 65.481 = 81.481, Cb = 128 - 37.797, Cr = 128 + 112
    np.testing.assert_array_equal(ycc[0, 2], [81, 90, 240])
    y = 16 + (65.481 * 10 + 128.553 * 200 + 24.966 * 30) / 255
    assert ycc[0, 3, 0] == np.floor(y + 0.5)


def test_float_round_trip_is_exact() -> None:
    rgb = np.random.default_rng(0).random((9, 7, 3))
    ycc = rgb2ycbcr(rgb)
    assert ycc[..., 0].min() >= 16 / 255 and ycc[..., 0].max() <= 235 / 255
    np.testing.assert_allclose(ycbcr2rgb(ycc), rgb, atol=1e-12)


def test_uint8_round_trip_is_close() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    back = ycbcr2rgb(rgb2ycbcr(rgb))
    assert back.dtype == np.uint8
    assert np.abs(back.astype(int) - rgb).max() <= 2


def test_grey_is_its_own_y_and_grey_rgb_is_converted() -> None:
    grey = np.full((4, 4), 100, np.uint8)
    assert rgb2y(grey) is grey
    # grey stored as RGB goes through rgb2ycbcr: 16 + 219/255 * 100 = 101.88 -> 102
    np.testing.assert_array_equal(rgb2y(np.stack([grey] * 3, -1)), 102)


def test_modcrop_and_shave() -> None:
    img = np.arange(7 * 11 * 3).reshape(7, 11, 3)
    np.testing.assert_array_equal(modcrop(img, 3), img[:6, :9])
    np.testing.assert_array_equal(modcrop(img, 4), img[:4, :8])
    np.testing.assert_array_equal(shave(img, 2), img[2:5, 2:9])
    assert shave(img, 0) is img


def test_float_primaries_give_the_bt601_studio_swing_matrix() -> None:
    # BT.601: Y' = 0.299 R + 0.587 G + 0.114 B scaled to 219 levels, Cb, Cr = (B - Y') / 1.772, (R - Y') / 1.402
    # scaled to 224, offsets 16, 128, 128 (of 255); MATLAB keeps three decimals of each coefficient.
    kr, kb = 0.299, 0.114
    kg = 1 - kr - kb
    want = np.array([[219 * kr, 219 * kg, 219 * kb],
                     [-112 * kr / (1 - kb), -112 * kg / (1 - kb), 112],
                     [112, -112 * kg / (1 - kr), -112 * kb / (1 - kr)]])
    primaries = rgb2ycbcr(np.eye(3)[None])[0]  # row i: YCbCr of primary i
    np.testing.assert_allclose(primaries * 255 - [16, 128, 128], want.T, atol=5e-4)


def test_rgb2y_of_a_colour_image_is_the_y_of_rgb2ycbcr() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(rgb2y(rgb), rgb2ycbcr(rgb)[..., 0])
    pure = np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)
    np.testing.assert_array_equal(rgb2y(pure), [[81, 41]])  # 16 + 65.481 and 16 + 24.966, rounded
