"""MATLAB-style `modcrop` and `shave`; they slice, so they serve numpy arrays and torch tensors alike."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def modcrop(img: T, scale: int) -> T:
    """Crop rows and columns (first two axes) to multiples of `scale`, keeping the top-left corner."""
    h, w = img.shape[0], img.shape[1]
    return img[: h - h % scale, : w - w % scale]


def shave(img: T, border: int) -> T:
    """Remove `border` pixels from every side (first two axes)."""
    if border == 0:
        return img
    return img[border:-border, border:-border]
