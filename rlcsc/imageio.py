"""Reading image files: uint8 arrays, or one clear error naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rlcsc.errors import RlcscError


def read_image(path: Path) -> np.ndarray:
    """An image file as uint8 (H, W) if single-channel, else (H, W, 3) RGB."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im if im.mode == "L" else im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as err:
        raise RlcscError(f"cannot read image {path}: {err}") from None


def image_size(path: Path) -> tuple[int, int]:
    """(rows, cols) of an image file, from its header alone."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, ValueError, SyntaxError) as err:
        raise RlcscError(f"cannot read image {path}: {err}") from None
