"""MATLAB-exact bicubic `imresize`: hand-derived weights, sizes, uint8 semantics, numpy == torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlcsc.imresize import contributions, cubic, imresize, imresize_torch, output_size

SCALES = [0.4, 0.5, 0.7, 1 / 2, 1 / 3, 1 / 4, 2, 3, 4]


def test_cubic_kernel_values() -> None:
    # Keys' kernel with a = -0.5, evaluated by hand.
    x = np.array([0, 0.25, 0.75, 1, 1.25, 1.75, 2, 2.5])
    want = [1, 0.8671875, 0.2265625, 0, -0.0703125, -0.0234375, 0, 0]
    np.testing.assert_allclose(cubic(x), want, atol=1e-15)
    np.testing.assert_allclose(cubic(-x), want, atol=1e-15)


def test_upscale_by_two_matches_hand_derivation() -> None:
    # Output 1: u = 0.75, taps at 1-based -1, 0, 1, 2 with weights cubic(1.75), cubic(0.75),
    # cubic(0.25), cubic(1.25); -1 and 0 mirror to 2 and 1, so out = 1.09375 v1 - 0.09375 v2.
    # Output 2: u = 1.25, taps 0..3 -> 1, 1, 2, 3: out = 0.796875 v1 + 0.2265625 v2 - 0.0234375 v3.
    v = np.array([[0.3, 0.9, 0.1, 0.6]])
    out = imresize(v, 2)
    assert out.shape == (2, 8)
    assert out[0, 0] == pytest.approx(1.09375 * 0.3 - 0.09375 * 0.9, abs=1e-15)
    assert out[0, 1] == pytest.approx(0.796875 * 0.3 + 0.2265625 * 0.9 - 0.0234375 * 0.1, abs=1e-15)
    np.testing.assert_array_equal(out[0], out[1])  # one input row: every output row is that row


def test_downscale_by_two_antialiases_as_derived_by_hand() -> None:
    # Kernel widened to 8 taps, h(x) = cubic(x/2)/2; output 1 has u = 1.5 and taps -2..5, which
    # mirror onto 1..4 with summed weights 0.546875, 0.3984375, 0.1015625, -0.046875.
    m = contributions(4, 2, 0.5).toarray()
    np.testing.assert_allclose(m[0], [0.546875, 0.3984375, 0.1015625, -0.046875], atol=1e-15)
    np.testing.assert_allclose(m[1], m[0][::-1], atol=1e-15)  # symmetric image, symmetric weights
    np.testing.assert_allclose(m.sum(axis=1), 1, atol=1e-15)


def test_a_scale_not_the_ratio_of_the_sizes_places_the_taps_by_the_scale() -> None:
    # Section 5.2's factor 0.7 on 23 pixels gives ceil(16.1) = 17, a ratio of 17/23, not 0.7: MATLAB places the taps
    # by the scale given. Output 1: u = 1/0.7 + (1 - 1/0.7)/2 = 1.2142857, the kernel widened to 4/0.7, taps -2..5
    # at 0.7 * (u - tap) = 2.25, 1.55, 0.85, 0.15, -0.55, -1.25, -1.95, -2.65, whose cubic() is 0, -0.0556875,
    # 0.1149375, 0.9488125, 0.4933125, -0.0703125, -0.0011875, 0 (summing to 1.429875); taps -2, -1, 0 mirror onto
    # 3, 2, 1.
    m = contributions(23, 17, 0.7).toarray()
    want = np.array([0.1149375 + 0.9488125, -0.0556875 + 0.4933125, -0.0703125, -0.0011875]) / 1.429875
    np.testing.assert_allclose(m[0, :4], want, atol=1e-15)
    assert not m[0, 4:].any()


def test_output_size_is_ceil_of_scale_times_size() -> None:
    assert output_size((255, 256), 1 / 3) == (85, 86)
    assert output_size((7, 11), 0.7) == (5, 8)
    assert imresize(np.zeros((7, 11)), 0.7).shape == (5, 8)
    assert imresize(np.zeros((7, 11, 3)), size=(9, 4)).shape == (9, 4, 3)


def test_scale_one_is_identity_and_constants_stay_constant() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    np.testing.assert_array_equal(imresize(img, 1), img)
    for s in SCALES:
        np.testing.assert_allclose(imresize(np.full((21, 19), 0.37), s), 0.37, atol=1e-14)


def test_uint8_rounds_after_each_pass_and_clips() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (23, 31), dtype=np.uint8)
    out = imresize(img, 0.7)
    assert out.dtype == np.uint8
    rows = np.clip(np.floor(contributions(23, 17, 0.7) @ img.astype(float) + 0.5), 0, 255)
    both = np.clip(np.floor((contributions(31, 22, 0.7) @ rows.T).T + 0.5), 0, 255)
    np.testing.assert_array_equal(out, both.astype(np.uint8))
    # a black/white edge overshoots with the negative lobes: uint8 clips, float does not
    edge = np.zeros((8, 8), np.uint8)
    edge[:, 4:] = 255
    assert imresize(edge.astype(float), 3).max() > 255
    assert imresize(edge, 3).max() == 255


def test_explicit_size_uses_per_dimension_ratio() -> None:
    """12 x 18 to 24 x 54: the rows are resized by 2 and the columns by 3, each by its own ratio (an image that
    varies along one dimension only shows that dimension's)."""
    rng = np.random.default_rng(2)
    img = rng.random((12, 18))
    np.testing.assert_allclose(imresize(imresize(img, 1 / 3), size=(12, 18)), imresize(imresize(img, 1 / 3), 3))
    down, across = rng.random((12, 1)) * np.ones((1, 18)), np.ones((12, 1)) * rng.random((1, 18))
    np.testing.assert_allclose(imresize(down, size=(24, 54))[:, 0], imresize(down, 2)[:, 0])
    np.testing.assert_allclose(imresize(across, size=(24, 54))[0], imresize(across, 3)[0])


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("shape", [(17, 23), (31, 9), (45, 45)])
def test_torch_matches_numpy(scale: float, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(3)
    img = rng.random(shape)
    want = imresize(img, scale)
    got = imresize_torch(torch.from_numpy(img)[None, None], scale)[0, 0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    got32 = imresize_torch(torch.from_numpy(img).float(), scale).numpy()
    np.testing.assert_allclose(got32, want, atol=1e-6, rtol=0)


def test_torch_is_batched() -> None:
    x = torch.rand(3, 2, 15, 21, dtype=torch.float64)
    out = imresize_torch(x, size=(30, 7))
    assert out.shape == (3, 2, 30, 7)
    np.testing.assert_allclose(out[2, 1].numpy(), imresize(x[2, 1].numpy(), size=(30, 7)), atol=1e-12)


def test_uint8_resizes_the_dimension_of_the_smaller_scale_first() -> None:
    """MATLAB's imresize sorts the scale factors and resizes the dimension of the smallest first; with uint8
    rounding after each pass the order shows: 12 x 18 to 24 x 9 halves the columns, then doubles the rows."""
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (12, 18), dtype=np.uint8)
    rows, cols = contributions(12, 24, 2.0), contributions(18, 9, 0.5)

    def rnd(x: np.ndarray) -> np.ndarray:
        return np.clip(np.floor(x + 0.5), 0, 255)

    columns_first = rnd(rows @ rnd((cols @ img.T.astype(float)).T))
    rows_first = rnd((cols @ rnd(rows @ img.astype(float)).T).T)
    assert (columns_first != rows_first).any()
    np.testing.assert_array_equal(imresize(img, size=(24, 9)), columns_first.astype(np.uint8))
