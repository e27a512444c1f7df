"""`rlcsc sr` and whole-image inference: tiling, file formats, modes and bit depths, colour, alpha, sizes,
errors, and a real gain over bicubic."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import png
import pytest
import tifffile
import torch
from PIL import Image
from skimage import data as skdata

from rlcsc import sr
from rlcsc.atomic import save_torch
from rlcsc.cli import main
from rlcsc.color import rgb2y, rgb2ycbcr, ycbcr2rgb
from rlcsc.crop import shave
from rlcsc.data.augment import AugmentParams, augment
from rlcsc.data.patches import PatchParams, make_patches
from rlcsc.errors import RlcscError
from rlcsc.imageio import Header, Picture, read_header, read_picture, write_picture
from rlcsc.imresize import imresize
from rlcsc.inference import apply, load_model, load_torch, model_state, network_sha256
from rlcsc.metrics import psnr
from rlcsc.models.rlcsc import RLCSC, RLCSCConfig
from rlcsc.rounding import im2uint
from rlcsc.train import TrainParams, train

CHANNELS = {"L": None, "LA": 2, "RGB": 3, "RGBA": 4}
LOSSLESS = [(fmt, mode, bits) for fmt in ("png", "tif") for mode in CHANNELS for bits in (8, 16)]
LOSSLESS += [("bmp", mode, 8) for mode in ("L", "RGB")]
ALL = LOSSLESS + [("jpg", mode, 8) for mode in ("L", "RGB")]


def run_sr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlcsc.cli", "sr", *args], capture_output=True, text=True, check=False)


def sr_in_process(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """`rlcsc sr ARGS` in this process: exit status and stderr."""
    status = main(["sr", *args])
    return status, capsys.readouterr().err


def sr_file(input: Path, output: Path, *args: object, **kwargs: object) -> str:
    """`sr.super_resolve_files` of one image: the line it says."""
    (line,) = sr.super_resolve_files([input], output, *args, **kwargs)
    return line


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """An untrained miniature model file."""
    torch.manual_seed(0)
    save_torch(model_state(RLCSC(RLCSCConfig(recursions=1, features=2, codes=2))), tmp_path / "m.pt")
    return tmp_path / "m.pt"


def pixels(mode: str, bits: int, shape: tuple[int, int] = (9, 7), seed: int = 0) -> np.ndarray:
    """Random integer pixels of a mode and bit depth (16-bit ones mostly not multiples of 257)."""
    c = CHANNELS[mode]
    return np.random.default_rng(seed).integers(0, 2**bits, shape if c is None else (*shape, c),
                                                dtype=np.uint8 if bits == 8 else np.uint16)


def save(data: np.ndarray, path: Path) -> None:
    """Write integer pixels with the format's own library: tifffile, pypng for 16-bit colour or alpha PNG, else
    Pillow."""
    alpha = data.ndim == 3 and data.shape[2] in (2, 4)
    if path.suffix == ".tif":
        tifffile.imwrite(path, data, photometric="rgb" if data.ndim == 3 and data.shape[2] >= 3 else "minisblack",
                         extrasamples=("unassalpha",) if alpha else None)
    elif path.suffix == ".png" and data.dtype == np.uint16 and data.ndim == 3:
        with open(path, "wb") as f:
            png.Writer(data.shape[1], data.shape[0], greyscale=data.shape[2] == 2, alpha=alpha,
                       bitdepth=16).write(f, data.reshape(data.shape[0], -1))
    else:
        Image.fromarray(data).save(path)


def load(path: Path) -> np.ndarray:
    """Integer pixels of a file read with the format's own library (pypng for every PNG)."""
    if path.suffix == ".tif":
        return tifffile.imread(path)
    if path.suffix == ".png":
        width, height, rows, info = png.Reader(filename=str(path)).read()
        x = np.vstack(list(rows)).astype(np.uint8 if info["bitdepth"] == 8 else np.uint16)
        x = x.reshape(height, width, info["planes"])
        return x[..., 0] if info["planes"] == 1 else x
    return np.asarray(Image.open(path))


def test_tiled_inference_equals_whole_image() -> None:
    torch.manual_seed(0)
    model = RLCSC(RLCSCConfig(recursions=3, features=4, codes=8)).eval()
    img = np.random.default_rng(0).random((70, 53))
    whole = apply(model, img, tile=1000)
    np.testing.assert_allclose(apply(model, img, tile=16), whole, atol=1e-5)
    np.testing.assert_allclose(apply(model, img, tile=25), whole, atol=1e-5)
    np.testing.assert_array_equal(apply(model, torch.from_numpy(img), tile=25), apply(model, img, tile=25))


def test_a_window_computed_alone_equals_that_window_of_the_whole_image() -> None:
    torch.manual_seed(0)
    model = RLCSC(RLCSCConfig(recursions=3, features=4, codes=8)).eval()
    img = np.random.default_rng(0).random((70, 53))
    whole = apply(model, img)
    for rows, cols in (np.s_[20:40, 15:30], np.s_[0:12, 40:53], np.s_[0:70, 0:53]):  # inside, at a corner, all
        np.testing.assert_allclose(apply(model, img, window=(rows, cols)), whole[rows, cols], atol=1e-5)
        np.testing.assert_allclose(apply(model, img, tile=7, window=(rows, cols)), whole[rows, cols], atol=1e-5)


def test_a_network_that_adds_nothing_returns_its_input_in_fp32() -> None:
    """H = 0: eq. 12 gives out = I, so `apply` hands back the input image as fp32 rounds it, tiled or not."""
    model = RLCSC(RLCSCConfig(recursions=2, features=4, codes=8)).eval()
    model.zero_last_layer()
    img = np.random.default_rng(1).random((30, 41))
    want = img.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(apply(model, img), want)
    np.testing.assert_array_equal(apply(model, img, tile=9), want)


def test_a_loaded_model_computes_on_the_cpu_what_it_was_trained_to(tmp_path: Path) -> None:
    """A model file loads with channels-last weights on the CPU; whole, tiled or windowed, its output is the
    network's as trained (in the default layout), up to fp32 rounding."""
    torch.manual_seed(0)
    trained = RLCSC(RLCSCConfig(recursions=3, features=8, codes=16)).eval()
    save_torch(model_state(trained), tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.s.weight.is_contiguous(memory_format=torch.channels_last) and not loaded.s.weight.is_contiguous()
    img = np.random.default_rng(0).random((70, 53))
    whole = apply(trained, img)
    np.testing.assert_allclose(apply(loaded, img), whole, atol=1e-5)
    np.testing.assert_allclose(apply(loaded, img, tile=16), whole, atol=1e-5)
    np.testing.assert_allclose(apply(loaded, img, window=np.s_[20:40, 15:30]), whole[20:40, 15:30], atol=1e-5)


@pytest.mark.parametrize("fmt,mode,bits", LOSSLESS)
def test_pictures_read_and_write_exactly(fmt: str, mode: str, bits: int, tmp_path: Path) -> None:
    data = pixels(mode, bits)
    save(data, tmp_path / f"in.{fmt}")
    picture = read_picture(tmp_path / f"in.{fmt}")
    assert (picture.mode, picture.bits, picture.note) == (mode, bits, "")
    assert read_header(tmp_path / f"in.{fmt}").channels == (1 if data.ndim == 2 else data.shape[2])
    np.testing.assert_array_equal(picture.pixels, data / (2**bits - 1))
    write_picture(picture, tmp_path / f"out.{fmt}")
    out = load(tmp_path / f"out.{fmt}")
    assert out.dtype == data.dtype
    np.testing.assert_array_equal(out, data)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"in.{fmt}", f"out.{fmt}"]  # no temporary left


def test_planar_16bit_tiff_is_read(tmp_path: Path) -> None:
    data = pixels("RGB", 16)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(data, -1, 0), photometric="rgb", planarconfig="separate")
    picture = read_picture(tmp_path / "planar.tif")
    assert (picture.mode, picture.bits) == ("RGB", 16)
    np.testing.assert_array_equal(picture.pixels, data / 65535)


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_a_tiff_of_premultiplied_alpha_is_read_as_straight_colour(mode: str, tmp_path: Path) -> None:
    """ExtraSamples 1 (associated alpha): the stored colour is premultiplied by alpha, so it is read divided by
    it (0 where alpha is 0), as Pillow reads an 8-bit one; alpha is read as stored."""
    rng = np.random.default_rng(0)
    alpha = rng.integers(0, 65536, (9, 7, 1))
    alpha[0, 0] = 0
    data = np.concatenate([rng.integers(0, alpha + 1, (9, 7, CHANNELS[mode] - 1)), alpha], axis=2).astype(np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", data, photometric="rgb" if mode == "RGBA" else "minisblack",
                     extrasamples=("assocalpha",))
    picture = read_picture(tmp_path / "in.tif")
    straight = np.divide(data[..., :-1], alpha, out=np.zeros(data[..., :-1].shape), where=alpha > 0)
    assert (picture.mode, picture.bits) == (mode, 16)
    np.testing.assert_allclose(picture.pixels[..., :-1], straight, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(picture.pixels[..., -1], alpha[..., 0] / 65535)


def test_16bit_grey_that_pillow_reads_is_read_at_full_precision(tmp_path: Path) -> None:
    """A format read by Pillow alone (here lossless JPEG 2000) whose grey is 16-bit ("I;16"): 65535 is white."""
    data = pixels("L", 16)
    Image.fromarray(data).save(tmp_path / "in.jp2")
    picture = read_picture(tmp_path / "in.jp2")
    assert (picture.mode, picture.bits, read_header(tmp_path / "in.jp2").bits) == ("L", 16, 16)
    np.testing.assert_array_equal(picture.pixels, data / 65535)


def netpbm(path: Path, magic: bytes, maxval: int, data: np.ndarray) -> None:
    """A PGM or PPM file by the Netpbm format's own definition: a header (here with a comment), then binary
    samples (big-endian, two bytes each above maxval 255) or plain decimal ones."""
    head = b"%s\n# made by hand\n%d %d\n%d\n" % (magic, data.shape[1], data.shape[0], maxval)
    body = (" ".join(map(str, data.ravel())).encode() if magic in (b"P2", b"P3")
            else data.astype(">u2" if maxval > 255 else "u1").tobytes())
    path.write_bytes(head + body)


@pytest.mark.parametrize("magic,maxval,mode", [(b"P5", 4095, "L"), (b"P5", 65535, "L"), (b"P6", 1023, "RGB"),
                                               (b"P6", 65535, "RGB")])
def test_binary_netpbm_of_more_than_8_bits_is_read_at_full_precision(magic: bytes, maxval: int, mode: str,
                                                                     tiny: Path, tmp_path: Path) -> None:
    """maxval is white (Pillow makes a 16-bit PGM 32-bit integers and a 16-bit PPM 8-bit); `rlcsc sr` keeps
    the 16 bits."""
    data = np.random.default_rng(0).integers(0, maxval + 1, (9, 7) if mode == "L" else (9, 7, 3))
    data.flat[:2] = 0, maxval
    netpbm(tmp_path / "in.pnm", magic, maxval, data)
    picture = read_picture(tmp_path / "in.pnm")
    assert (picture.mode, picture.bits, picture.note) == (mode, 16, "")
    assert read_header(tmp_path / "in.pnm") == Header(7, 9, 1 if mode == "L" else 3, 16, 1)
    np.testing.assert_array_equal(picture.pixels, data / maxval)
    line = sr_file(tmp_path / "in.pnm", tmp_path / "out.png", 3, tiny, False)
    assert line.count(f" {mode} 16-bit") == 2 and load(tmp_path / "out.png").dtype == np.uint16, line


def test_netpbm_of_8_bits_is_read_by_pillow(tmp_path: Path) -> None:
    data = pixels("RGB", 8)
    for magic in (b"P3", b"P6"):
        netpbm(tmp_path / "in.ppm", magic, 255, data)
        picture = read_picture(tmp_path / "in.ppm")
        assert (picture.mode, picture.bits) == ("RGB", 8)
        np.testing.assert_array_equal(picture.pixels, data / 255)


@pytest.mark.parametrize("magic,data,message", [
    (b"P2", np.array([[0, 4095]]), "a plain (ASCII) PGM or PPM of more than 8 bits is not supported"),
    (b"P3", np.array([[[0, 1, 2], [3, 4, 4095]]]), "a plain (ASCII) PGM or PPM of more than 8 bits is not supported"),
    (b"P5", np.array([[0, 4096]]), "a sample exceeds its maxval 4095"),
])
def test_netpbm_that_cannot_be_read_exactly_is_one_error(magic: bytes, data: np.ndarray, message: str,
                                                         tmp_path: Path) -> None:
    netpbm(tmp_path / "in.pnm", magic, 4095, data)
    with pytest.raises(RlcscError, match=re.escape(message)):
        read_picture(tmp_path / "in.pnm")
    (tmp_path / "in.pnm").write_bytes((tmp_path / "in.pnm").read_bytes()[:-1])
    with pytest.raises(RlcscError, match="truncated" if magic == b"P5" else "plain"):
        read_picture(tmp_path / "in.pnm")


@pytest.mark.parametrize("fmt,mode,bits", ALL)
def test_sr_keeps_mode_and_bit_depth(fmt: str, mode: str, bits: int, tiny: Path, tmp_path: Path) -> None:
    save(pixels(mode, bits), tmp_path / f"in.{fmt}")
    line = sr_file(tmp_path / f"in.{fmt}", tmp_path / f"out.{fmt}", 3, tiny, False)
    out = load(tmp_path / f"out.{fmt}")
    assert out.shape[:2] == (27, 21) and out.dtype == (np.uint8 if bits == 8 else np.uint16)
    assert out.shape[2:] == (() if CHANNELS[mode] is None else (CHANNELS[mode],))
    assert line.count(f" {mode} {bits}-bit") == 2, line
    assert f"model {tiny}: unlabelled rlcsc model" in line


def test_scales_2_and_4_are_the_ends_of_the_range(tiny: Path, tmp_path: Path) -> None:
    """The scales trained on, 2 to 4, ends included; the line said of one image does not count it."""
    save(pixels("RGB", 8, (8, 6)), tmp_path / "in.png")
    for scale, shape in ((2, (16, 12, 3)), (4, (32, 24, 3))):
        line = sr_file(tmp_path / "in.png", tmp_path / f"x{scale}.png", scale, tiny, False)
        assert line.startswith(f"{tmp_path / 'in.png'} 6x8 RGB 8-bit -> "), line
        assert load(tmp_path / f"x{scale}.png").shape == shape
    for scale in (1.9, 4.1):
        with pytest.raises(RlcscError, match="--scale must be between 2 and 4"):
            sr_file(tmp_path / "in.png", tmp_path / "out.png", scale, tiny, False)
    assert not (tmp_path / "out.png").exists()


def test_8bit_rgb_output_is_unchanged(tiny: Path, tmp_path: Path) -> None:
    """Bit-identical to what `rlcsc sr` has always done with an 8-bit RGB image."""
    img = pixels("RGB", 8, (20, 17))
    Image.fromarray(img).save(tmp_path / "in.png")
    sr_file(tmp_path / "in.png", tmp_path / "out.png", 3, tiny, False, precision="fp32")
    ycc = imresize(rgb2ycbcr(img / 255.0), 3)
    ycc[..., 0] = apply(load_model(tiny), ycc[..., 0])
    before = np.clip(np.floor(ycbcr2rgb(ycc) * 255 + 0.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), before)


def test_16bit_input_is_processed_at_full_precision(tiny: Path, tmp_path: Path) -> None:
    data = pixels("RGB", 16, (20, 17))
    assert np.any(data % 257)
    save(data, tmp_path / "in.png")
    sr_file(tmp_path / "in.png", tmp_path / "out.png", 3, tiny, False, precision="fp32")
    out = load(tmp_path / "out.png")
    model = load_model(tiny)
    full = sr.super_resolve(model, Picture(data / 65535.0, 16), 3)
    np.testing.assert_array_equal(out, im2uint(full.pixels, 16))
    via8 = sr.super_resolve(model, Picture(np.floor(data / 257 + 0.5) / 255, 8), 3)
    assert np.any(out != im2uint(via8.pixels, 16)) and np.any(out % 257)


@pytest.mark.parametrize("mode,bits", [("RGBA", 8), ("LA", 16)])
def test_alpha_is_bicubic(mode: str, bits: int, tiny: Path, tmp_path: Path) -> None:
    data = pixels(mode, bits, (12, 10))
    save(data, tmp_path / "in.png")
    sr_file(tmp_path / "in.png", tmp_path / "out.png", 3, tiny, False)
    alpha = load(tmp_path / "out.png")[..., -1]
    np.testing.assert_array_equal(alpha, im2uint(imresize(data[..., -1] / (2**bits - 1.0), 3), bits))


def test_palette_bilevel_and_exif_orientation_are_converted_and_said(tiny: Path, tmp_path: Path) -> None:
    rgb = pixels("RGB", 8, (8, 6))
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "pt.png", transparency=0)
    Image.fromarray(rgb[..., 0] > 127).save(tmp_path / "b.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: view rotated 90 degrees clockwise
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif)
    cases = {"p.png": ("RGB", "converted from palette", (24, 18, 3)),
             "pt.png": ("RGBA", "converted from palette", (24, 18, 4)),
             "b.png": ("L", "converted from bilevel", (24, 18)),
             "r.jpg": ("RGB", "turned upright by its EXIF orientation", (18, 24, 3))}
    for name, (mode, note, shape) in cases.items():
        out = tmp_path / f"out-{Path(name).stem}.png"
        line = sr_file(tmp_path / name, out, 3, tiny, False)
        assert f"{mode} 8-bit ({note}) -> " in line and line.count(f"{mode} 8-bit") == 2, line
        assert load(out).shape == shape and load(out).dtype == np.uint8



def test_a_damaged_exif_block_leaves_the_picture_unturned_and_says_so(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """EXIF is read for the orientation alone: a block Pillow cannot parse costs the turn, not the image."""
    rgb = pixels("RGB", 8, (8, 6))
    for name in ("x.jpg", "x.png"):
        Image.fromarray(rgb).save(tmp_path / name, exif=b"Exif\x00\x00\x01\x02\x03")
        picture = read_picture(tmp_path / name)
        assert picture.note == "not turned: its EXIF block is damaged" and picture.pixels.shape == (8, 6, 3)
        assert read_header(tmp_path / name) == Header(6, 8, 3, 8, 1)
    assert capsys.readouterr().err == ""  # nor Pillow's warnings


def test_an_image_without_a_pixel_is_one_error(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="zero-size"):
        tifffile.imwrite(tmp_path / "empty.tif", np.zeros((0, 5), np.uint16))
    with pytest.raises(RlcscError, match=re.escape(f"cannot read image {tmp_path / 'empty.tif'}: it is 0x0, without")):
        read_header(tmp_path / "empty.tif")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_reader_turns_a_picture_upright_by_its_exif_orientation(tmp_path: Path, orientation: int) -> None:
    """The same stored pixels and orientation tag give the same upright picture, and a header of its size, from an
    8-bit PNG (the picture Pillow's own `exif_transpose` makes), an uncompressed 8-bit TIFF (which Pillow scrambles
    when the tag turns it), a 16-bit PNG and a 16-bit TIFF (whose readers once ignored the tag), an LZW TIFF (which
    Pillow turns itself), and a palette PNG and TIFF, deflated and uncompressed (which Pillow scrambles too)."""
    from PIL import ImageOps

    from rlcsc.imageio import read_header, read_picture

    grey = pixels("L", 8, (4, 6))
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(grey).save(tmp_path / "g8.png", exif=exif)
    Image.fromarray(grey).save(tmp_path / "g8.tif", exif=exif)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png", exif=exif)
    tifffile.imwrite(tmp_path / "g16.tif", grey.astype(np.uint16) * 257,
                     extratags=[(0x0112, "H", 1, orientation, True)])
    Image.fromarray(grey).save(tmp_path / "lzw.tif", exif=exif, compression="tiff_lzw")  # Pillow turns it itself
    rgb = pixels("RGB", 8, (4, 6))
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png", exif=exif)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.tif", exif=exif, compression="tiff_deflate")
    Image.fromarray(rgb).convert("P").save(tmp_path / "pu.tif", exif=exif)  # uncompressed: Pillow scrambles it too
    with Image.open(tmp_path / "g8.png") as im:
        upright = np.asarray(ImageOps.exif_transpose(im)) / 255
    with Image.open(tmp_path / "p.png") as im:
        palette = np.asarray(ImageOps.exif_transpose(im).convert("RGB")) / 255
    for name, want in [(n, upright) for n in ("g8.png", "g8.tif", "g16.png", "g16.tif", "lzw.tif")] + [
            (n, palette) for n in ("p.png", "p.tif", "pu.tif")]:
        picture, header = read_picture(tmp_path / name), read_header(tmp_path / name)
        np.testing.assert_array_equal(picture.pixels, want, err_msg=name)
        assert (header.height, header.width) == want.shape[:2], name
        assert ("turned upright by its EXIF orientation" in picture.note) == (orientation != 1), name


def test_an_image_s_colour_profile_goes_into_its_output(tiny: Path, tmp_path: Path) -> None:
    """A picture's values are in its file's colour space: the output carries the same ICC profile, in every
    format that holds one."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(pixels("RGB", 8)).save(tmp_path / "in.png", icc_profile=profile)
    Image.fromarray(pixels("RGB", 8)).save(tmp_path / "in.jpg", icc_profile=profile)
    tifffile.imwrite(tmp_path / "in16.tif", pixels("RGB", 16), photometric="rgb", iccprofile=profile)
    for source, target in (("in.png", "o.png"), ("in.png", "o.jpg"), ("in.jpg", "o.tif"), ("in16.tif", "o16.png"),
                           ("in16.tif", "o16.tif")):
        sr_file(tmp_path / source, tmp_path / target, 2, tiny, False)
        with Image.open(tmp_path / target) as im:
            kept = (im.info.get("icc_profile") if target != "o16.tif"
                    else tifffile.TiffFile(tmp_path / target).pages.first.iccprofile)
        assert kept == profile, (source, target)

# The JPEG standard's example quantization tables (ITU-T T.81, Annex K.1 and K.2), in natural order; the IJG
# library scales them to a quality q < 50 by 5000 / q percent, else by 200 - 2 q percent, rounded.
JPEG_LUMINANCE = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
                  14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
                  49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
JPEG_CHROMINANCE = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
                    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32


def test_a_jpeg_output_is_written_at_quality_95(tmp_path: Path) -> None:
    """A JPEG output is written at quality 95: its quantization tables are the standard's scaled by 10%."""
    write_picture(Picture(pixels("RGB", 8) / 255.0, 8), tmp_path / "out.jpg")
    with Image.open(tmp_path / "out.jpg") as im:
        tables = im.quantization
    assert [list(tables[0]), list(tables[1])] == [[min(max((q * 10 + 50) // 100, 1), 255) for q in base]
                                                  for base in (JPEG_LUMINANCE, JPEG_CHROMINANCE)]


def test_a_tiff_output_is_deflate_compressed(tmp_path: Path) -> None:
    """8-bit and 16-bit TIFF outputs alike are compressed losslessly with deflate (TIFF compression 8 or 32946)."""
    for bits in (8, 16):
        write_picture(Picture(pixels("RGB", bits) / (2**bits - 1.0), bits), tmp_path / f"out{bits}.tif")
        with tifffile.TiffFile(tmp_path / f"out{bits}.tif") as tif:
            assert tif.pages.first.compression in (8, 32946), bits


def test_a_tiff_output_marks_its_alpha_as_unassociated_alpha(tmp_path: Path) -> None:
    """TIFF 6.0's ExtraSamples tag says what a sample beyond grey or RGB is: 2, unassociated alpha, for the alpha
    of an LA or RGBA output of 8 or 16 bits (0 would leave it an unspecified extra sample, not transparency)."""
    for mode in ("LA", "RGBA"):
        for bits in (8, 16):
            write_picture(Picture(pixels(mode, bits) / (2**bits - 1.0), bits), tmp_path / f"{mode}{bits}.tif")
            with tifffile.TiffFile(tmp_path / f"{mode}{bits}.tif") as tif:
                assert tif.pages.first.tags["ExtraSamples"].value in (2, (2,)), (mode, bits)


def test_frames_and_a_transparent_colour_left_out_are_said(tiny: Path, tmp_path: Path) -> None:
    grey, rgb = pixels("L", 8, (8, 6)), pixels("RGB", 8, (8, 6))
    frames = [Image.fromarray(rgb + i) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:  # two 16-bit pages
        tif.write(pixels("L", 16, (8, 6)))
        tif.write(pixels("L", 16, (8, 6), seed=1))
    Image.fromarray(grey).save(tmp_path / "trns.png", transparency=int(grey[0, 0]))
    Image.fromarray(rgb).save(tmp_path / "trns-rgb.png", transparency=tuple(int(v) for v in rgb[0, 0]))
    with open(tmp_path / "trns16.png", "wb") as f:
        png.Writer(6, 8, greyscale=True, bitdepth=16, transparent=1234).write(f, pixels("L", 16, (8, 6)))
    Image.fromarray(grey).save(tmp_path / "frames.tif", save_all=True, append_images=[Image.fromarray(grey + 1)])
    retype(tmp_path / "frames.tif", 1, 278)  # RowsPerStrip of the second frame: Pillow fails counting frames
    (tmp_path / "cut.gif").write_bytes((tmp_path / "anim.gif").read_bytes()[:-30])  # its last frame cut short
    gif = (tmp_path / "anim.gif").read_bytes()
    last = gif.rindex(b"\x21\xf9\x04") + 8  # the last frame's descriptor, after its graphic control extension
    (tmp_path / "cut-header.gif").write_bytes(gif[:last + 5])  # that header cut short: Pillow's struct.error
    dropped = "its transparent colour dropped: the output has no alpha"
    cases = {"anim.gif": "RGB 8-bit (the first of its 3 frames; converted from palette)",
             "pages.tif": "L 16-bit (the first of its 2 frames)",
             "frames.tif": "L 8-bit (the first of its frames: a later one is damaged)",
             "cut.gif": "RGB 8-bit (the first of its 3 frames; converted from palette)",
             "cut-header.gif": "RGB 8-bit (the first of its frames: a later one is damaged; converted from palette)",
             "trns.png": f"L 8-bit ({dropped})", "trns-rgb.png": f"RGB 8-bit ({dropped})",
             "trns16.png": f"L 16-bit ({dropped})"}
    for name, said in cases.items():
        line = sr_file(tmp_path / name, tmp_path / f"out-{Path(name).stem}.png", 2, tiny, False)
        assert f" {said} -> " in line, line


def test_a_fifo_is_refused_not_waited_on(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    os.mkfifo(tmp_path / "fifo")
    save(pixels("L", 8), tmp_path / "in.png")
    cases = [(["sr", str(tmp_path / "fifo"), "--scale", "2", "--model", str(tiny), "-o", str(tmp_path / "o.png")],
              "fifo is not a regular file (a FIFO, socket or device); name an image file"),
             (["sr", str(tmp_path / "in.png"), "--scale", "2", "--model", str(tmp_path / "fifo"),
               "-o", str(tmp_path / "o.png")], "fifo is not a regular file; expected a model.pt"),
             (["params", "--params", str(tmp_path / "fifo")], f"params file {tmp_path / 'fifo'} is not a regular file")]

    def waiting(signum: int, frame: object) -> None:
        raise TimeoutError("waits on the FIFO")

    previous = signal.signal(signal.SIGALRM, waiting)
    try:
        for argv, message in cases:
            signal.alarm(20)
            status = main(argv)
            signal.alarm(0)
            err = capsys.readouterr().err
            assert status == 1 and message in err and len(err.strip().splitlines()) == 1, err
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_output_is_never_written_over_without_overwrite(tiny: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    save(pixels("RGB", 8), tmp_path / "in.png")
    original = (tmp_path / "in.png").read_bytes()
    (tmp_path / "taken.png").write_bytes(b"keep me")
    for target, message in [("in.png", "is the input file"), ("taken.png", "exists; pass --overwrite")]:
        status, err = sr_in_process(capsys, str(tmp_path / "in.png"), "--scale", "2", "--model", str(tiny),
                                    "-o", str(tmp_path / target))
        assert status == 1 and message in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "in.png").read_bytes() == original and (tmp_path / "taken.png").read_bytes() == b"keep me"
    for target in ("taken.png", "in.png"):
        status, _ = sr_in_process(capsys, str(tmp_path / "in.png"), "--scale", "2", "--model", str(tiny),
                                  "-o", str(tmp_path / target), "--overwrite")
        assert status == 0 and load(tmp_path / target).shape == (18, 14, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "m.pt", "taken.png"]


def test_no_file_but_the_output_is_ever_written_or_removed(tiny: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """The temporary is a new name: not the input's, not a file of the user's that looks like one."""
    save(pixels("RGB", 8), tmp_path / ".photo.tmp.png")  # `cp photo.png .photo.tmp.png`
    (tmp_path / ".precious.tmp.png").write_bytes(b"mine")
    original = (tmp_path / ".photo.tmp.png").read_bytes()
    for source, target in [(".photo.tmp.png", "photo.png"), (".photo.tmp.png", "precious.png")]:
        status, err = sr_in_process(capsys, str(tmp_path / source), "--scale", "2", "--model", str(tiny),
                                    "-o", str(tmp_path / target))
        assert status == 0, err
        assert load(tmp_path / target).shape == (18, 14, 3)
    assert (tmp_path / ".photo.tmp.png").read_bytes() == original
    assert (tmp_path / ".precious.tmp.png").read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".photo.tmp.png", ".precious.tmp.png", "m.pt", "photo.png",
                                                          "precious.png"]


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_write(self: Image.Image, fp: Path, *args: object, **kwargs: object) -> None:
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", half_write)
    with pytest.raises(RlcscError, match="cannot write .*No space left"):
        write_picture(Picture(np.zeros((4, 4)), 8), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_default_model_is_the_recorded_k25(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorded, pipeline = tmp_path / "runs" / "model.pt", tmp_path / "models" / "model.pt"
    monkeypatch.setitem(sr.NAMED_MODELS, "rlcsc", ((recorded, pipeline), "train@K25"))
    save(pixels("L", 8), tmp_path / "in.png")
    with pytest.raises(RlcscError, match=f"no rlcsc model at {recorded} or {pipeline}.*dvc repro train@K25.*--model"):
        sr_file(tmp_path / "in.png", tmp_path / "out.png", 2, None, False)
    assert not (tmp_path / "out.png").exists()
    pipeline.parent.mkdir()
    labelled = {**torch.load(tiny, weights_only=True), "experiment": "K25", "budget": "quick", "status": "completed",
                "epochs_done": 4.0, "epochs_planned": 4.0}
    save_torch(labelled, pipeline)
    line = sr_file(tmp_path / "in.png", tmp_path / "out.png", 2, None, False, precision="fp32")
    assert line.endswith(f"(model {pipeline}: K25, budget quick, 4 of 4 epochs) in fp32")
    recorded.parent.mkdir()
    save_torch({**labelled, "budget": "paper", "epochs_done": 1.0, "epochs_planned": 35.0}, recorded)
    line = sr_file(tmp_path / "in.png", tmp_path / "out.png", 2, None, True, precision="fp32")
    assert line.endswith(f"(model {recorded}: K25, budget paper, 1 of 35 epochs) in fp32")
    save_torch({**labelled, "status": "diverged at epoch 2, step 5"}, recorded)
    line = sr_file(tmp_path / "in.png", tmp_path / "out.png", 2, None, True, precision="fp32")
    assert line.endswith("K25, budget quick, 4 of 4 epochs, diverged at epoch 2, step 5) in fp32")


def test_model_by_name_is_the_converted_vdsr(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    """`--model vdsr` picks the recorded evaluation's file, else the pipeline's, and says what it is; a file
    of that name in the working folder is still a file."""
    recorded, pipeline = tmp_path / "runs" / "model.pt", tmp_path / "models" / "model.pt"
    monkeypatch.setitem(sr.NAMED_MODELS, "vdsr", ((recorded, pipeline), "convert@VDSR"))
    save(pixels("L", 8), tmp_path / "in.png")
    status, err = sr_in_process(capsys, str(tmp_path / "in.png"), "--scale", "2", "--model", "vdsr",
                                "-o", str(tmp_path / "out.png"))
    assert status == 1 and "no vdsr model at" in err and "dvc repro convert@VDSR" in err
    source = {"group": "VDSR", "file": "VDSR_Official.mat", "sha256": "f6131666" + "0" * 56, "url": "u"}
    pipeline.parent.mkdir()
    save_torch({**torch.load(tiny, weights_only=True), "source": source}, pipeline)
    status, err = sr_in_process(capsys, str(tmp_path / "in.png"), "--scale", "2", "--model", "vdsr",
                                "-o", str(tmp_path / "out.png"), "--precision", "fp32")
    assert status == 0 and err.strip().endswith(f"(model {pipeline}: rlcsc, the released VDSR/VDSR_Official.mat "
                                                "(sha256 f6131666...)) in fp32")
    monkeypatch.chdir(tmp_path)
    Path("vdsr").mkdir()  # a folder of that name (as `rlcsc/` is in a checkout) does not hide the name
    status, err = sr_in_process(capsys, "in.png", "--scale", "2", "--model", "vdsr", "-o", "out1.png",
                                "--precision", "fp32")
    assert status == 0 and f"(model {pipeline}: " in err
    Path("vdsr").rmdir()
    Path("vdsr").write_bytes(b"not a model")
    status, err = sr_in_process(capsys, "in.png", "--scale", "2", "--model", "vdsr", "-o", "out2.png")
    assert status == 1 and "vdsr is not a PyTorch file" in err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    """A briefly trained model (220 steps, under a minute on two cores) on patches of two scikit-image photos."""
    root = tmp_path_factory.mktemp("sr")
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(skdata, name)()).save(root / f"{name}.png")
    aug = AugmentParams(flips=("none", "leftright"), rotations=(0, 90), factors=(1.0,))
    augment([root / "astronaut.png", root / "coffee.png"], root / "aug", aug, jobs=1)
    make_patches(root / "aug", root / "patches", PatchParams(scales=(3,), chunk=16), jobs=1)
    p = TrainParams(recursions=5, features=16, codes=32, zero_last=True, batch=16, epochs=2,
                    lr=0.01, checkpoint_every=1000, compile=False, device="cpu")
    train(p, root / "patches", mirror, root / "model")
    return root / "model" / "model.pt"


@pytest.mark.parametrize("scale", [3, 2.5])
def test_sr_beats_bicubic_on_an_unseen_photo(scale: float, trained: Path, tmp_path: Path) -> None:
    hr = skdata.chelsea()[:, :450]  # not among the training photos; 300x450 is a multiple of 3 and of 5
    lr = np.clip(np.floor(imresize(hr, 1 / scale) + 0.5), 0, 255).astype(np.uint8)
    Image.fromarray(lr).save(tmp_path / "lr.png")
    proc = run_sr(str(tmp_path / "lr.png"), "--scale", str(scale), "--model", str(trained), "-o",
                  str(tmp_path / "sr.png"))
    assert proc.returncode == 0, proc.stderr
    out = np.asarray(Image.open(tmp_path / "sr.png"))
    assert out.shape == hr.shape and out.dtype == np.uint8
    y_hr, y_sr = rgb2y(hr).astype(float), rgb2y(out).astype(float)
    y_bic = rgb2y(imresize(lr, scale)).astype(float)
    border = int(np.ceil(scale))
    gain = psnr(shave(y_hr, border), shave(y_sr, border)) - psnr(shave(y_hr, border), shave(y_bic, border))
    assert gain > 0.1, f"network is only {gain:.3f} dB above bicubic at scale {scale}"


def test_large_output_is_tiled(tiny: Path, tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1000, 1334, 3),
                                                      dtype=np.uint8)).save(tmp_path / "big.png")
    proc = run_sr(str(tmp_path / "big.png"), "--scale", "3", "--model", str(tiny), "-o", str(tmp_path / "o.png"))
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "o.png").size == (4002, 3000)
    assert "network: 100%" in proc.stderr and "48/48" in proc.stderr  # a bar over 6 x 8 tiles of 512


def test_sr_errors_are_one_line(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "bad.png").write_bytes(b"not an image")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "notes.txt").write_text("not a model\n")
    save_torch({"model": {}, "optimizer": {}, "epoch": 0}, tmp_path / "checkpoint.pt")
    state = torch.load(tiny, weights_only=True)

    def sealed(**changes) -> dict:
        """`state` changed and carrying the checksum of what it holds: made so, not damaged since."""
        made = {**state, **changes}
        return {**made, "network_sha256": network_sha256(made["arch"], made["config"], made["model"])}

    save_torch(sealed(model={k: torch.full_like(w, float("nan")) for k, w in state["model"].items()}),
               tmp_path / "nan.pt")
    save_torch(sealed(config={**state["config"], "recursions": -3}), tmp_path / "negative.pt")
    save_torch(sealed(config={**state["config"], "recursions": "25"}), tmp_path / "text.pt")
    save_torch({**state, "epochs_done": "3", "epochs_planned": 35}, tmp_path / "epochs.pt")  # beside the checksum
    save_torch({**state, "source": "VDSR_Official.mat"}, tmp_path / "source.pt")
    cases = [
        (["ok.png", "--scale", "3", "--model", "epochs.pt"],
         "epochs.pt: its epochs_done is '3', not a number; expected a model.pt written by `rlcsc train` or"),
        (["ok.png", "--scale", "3", "--model", "source.pt"],
         "source.pt: its source is 'VDSR_Official.mat', not a mapping of group, file, sha256; expected"),
        (["ok.png", "--scale", "3", "--model", "nan.pt"], "nan.pt: its weights are not all finite"),
        (["ok.png", "--scale", "3", "--model", "negative.pt"],
         "negative.pt: the rlcsc network's recursions must be from 1 to 1000, got -3"),
        (["ok.png", "--scale", "3", "--model", "text.pt"],
         "text.pt: the rlcsc network's recursions must be an integer"),
        (["bad.png", "--scale", "3", "--model", "m.pt"], "cannot read image"),
        (["ok.png", "--scale", "3", "--model", "missing.pt"], "model file not found"),
        (["ok.png", "--scale", "3", "--model", "drrn"], "model file not found: drrn (nor is it a model's name: rlcsc, "
                                                        "vdsr)"),
        (["ok.png", "--scale", "5", "--model", "m.pt"], "between 2 and 4"),
        (["ok.png", "--scale", "3", "--model", "ok.png"], "ok.png is not a PyTorch file; expected a model.pt"),
        (["ok.png", "--scale", "3", "--model", "notes.txt"], "notes.txt is not a PyTorch file; expected a model.pt"),
        (["ok.png", "--scale", "3", "--model", "checkpoint.pt"], "checkpoint.pt is a training checkpoint, not a model"),
    ]
    for i, (args, message) in enumerate(cases):
        args = ([str(tmp_path / a) if a.endswith((".png", ".pt", ".txt")) else a for a in args]
                + ["-o", str(tmp_path / "out.png")])
        if i == 0:  # in a fresh interpreter, whose stderr nothing else (an import warning) may write to
            proc = run_sr(*args)
            status, err = proc.returncode, proc.stderr
        else:
            status, err = sr_in_process(capsys, *args)
        assert status == 1 and message in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png", "checkpoint.pt", "epochs.pt", "m.pt", "nan.pt",
                                                          "negative.pt", "notes.txt", "ok.png", "source.pt", "text.pt"]


def test_a_model_file_the_system_will_not_read_is_said_so(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A model file that cannot be read (its permissions; memory refused while loading it) is that error, not "not a
    PyTorch file", which would have a checkpoint thrown away; a file of other content still is "not a PyTorch file"."""
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    args = [str(tmp_path / "ok.png"), "--scale", "3", "--model", str(tiny), "-o", str(tmp_path / "out.png")]
    for error, said in ((PermissionError(13, "Permission denied", str(tiny)), f"{tiny}: Permission denied"),
                        (MemoryError(), "out of memory")):
        def refuse(*args: object, error: BaseException = error, **kwargs: object) -> None:
            raise error

        monkeypatch.setattr(torch, "load", refuse)
        status, err = sr_in_process(capsys, *args)
        assert status == 1 and said in err and "not a PyTorch file" not in err, err
        with pytest.raises(type(error)):
            load_torch(tiny)
    monkeypatch.undo()
    assert load_torch(tmp_path / "ok.png") is None
    assert not (tmp_path / "out.png").exists()


def retype(path: Path, page: int, tag: int) -> None:
    """Damage little-endian TIFF `path`: tag `tag` of its page `page` said to be text, not a number."""
    data = bytearray(path.read_bytes())
    offset = struct.unpack_from("<I", data, 4)[0]
    for _ in range(page):
        offset = struct.unpack_from("<I", data, offset + 2 + 12 * struct.unpack_from("<H", data, offset)[0])[0]
    entries = [offset + 2 + 12 * i for i in range(struct.unpack_from("<H", data, offset)[0])]
    (entry,) = [e for e in entries if struct.unpack_from("<H", data, e)[0] == tag]
    struct.pack_into("<H", data, entry + 2, 2)  # TIFF type 2: ASCII
    path.write_bytes(data)


def test_a_damaged_tiff_is_one_line(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Damage that the readers meet as an index or type error is said as any other unreadable file is."""
    (tmp_path / "no-page.tif").write_bytes(b"II*\x00\x08\x00\x00\x00")  # its first page lies past its end
    tifffile.imwrite(tmp_path / "grey16.tif", pixels("L", 16))
    retype(tmp_path / "grey16.tif", 0, 257)  # ImageLength: tifffile fails on it
    Image.fromarray(pixels("L", 8)).save(tmp_path / "cut.tif")
    (tmp_path / "cut.tif").write_bytes((tmp_path / "cut.tif").read_bytes()[:6])  # Pillow: a struct.error
    for name in ("no-page.tif", "grey16.tif", "cut.tif"):
        args = (str(tmp_path / name), "--scale", "2", "--model", str(tiny), "-o", str(tmp_path / "out.png"))
        if name == "no-page.tif":  # in a fresh interpreter, whose stderr tifffile's log would write to
            proc = run_sr(*args)
            status, err = proc.returncode, proc.stderr
        else:
            status, err = sr_in_process(capsys, *args)
        assert status == 1 and len(err.strip().splitlines()) == 1, (name, err)
        assert err.startswith(f"rlcsc sr: error: cannot read image {tmp_path / name}: "), err
    assert "it holds no readable image" in proc.stderr
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))


def png_header(path: Path, width: int, height: int, bits: int, colour: int) -> None:
    """A PNG whose header says `width` x `height` at `bits` bits (colour type `colour`), and whose pixels are
    not deflate data: reading its header works, decoding it fails."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"not pixels")
                     + chunk(b"IEND", b""))


def test_an_image_too_large_for_the_memory_is_refused_from_its_header(tiny: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """12000 x 12000 at x2: over 20 GiB of float64 samples, for the 8- and 16-bit readers alike; the limit
    is the memory the image needs, checked before a pixel is decoded, and --max-memory moves it."""
    png_header(tmp_path / "grey8.png", 12000, 12000, 8, 0)
    png_header(tmp_path / "grey16.png", 12000, 12000, 16, 0)
    png_header(tmp_path / "rgb16.png", 12000, 12000, 16, 2)
    tifffile.imwrite(tmp_path / "grey16.tif", shape=(12000, 12000), dtype=np.uint16)  # a sparse file of zeros
    for name, gib in [("grey8.png", 21.5), ("grey16.png", 21.5), ("rgb16.png", 64.4), ("grey16.tif", 21.5)]:
        args = (str(tmp_path / name), "--scale", "2", "--model", str(tiny), "-o", str(tmp_path / "out.png"))
        status, err = sr_in_process(capsys, *args, "--max-memory", "8")
        assert status == 1 and err.strip() == (
            f"rlcsc sr: error: {tmp_path / name} is 12000x12000: at x2 (24000x24000) it needs about {gib} GiB of "
            f"memory, more than the 8.0 GiB that --max-memory allows; pass --max-memory {math.ceil(gib)} to try "
            "anyway, or cut the image into parts"), err
        if name.endswith(".png"):  # allowed, it is decoded, and its pixels are found damaged
            status, err = sr_in_process(capsys, *args, "--max-memory", "100")
            assert status == 1 and "cannot read image" in err and len(err.strip().splitlines()) == 1, err
    save(pixels("L", 8, (300, 300)), tmp_path / "small.png")  # under a tenth of a GiB: in MiB, not as 0.0 GiB
    status, err = sr_in_process(capsys, str(tmp_path / "small.png"), "--scale", "2", "--model", str(tiny), "-o",
                                str(tmp_path / "out.png"), "--max-memory", "0.001")
    assert status == 1 and re.search(r"it needs about \d+\.\d MiB of memory, more than the 1\.0 MiB that --max-memory "
                                     "allows; pass --max-memory 1 to try anyway", err), err
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))



def test_memory_the_system_refuses_while_computing_is_one_line(tiny: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the check (--max-memory raised, or a limit it cannot see), an allocation that fails ends with one
    line, and no output: numpy's, one without a message, and torch's (its CPU allocator raises a RuntimeError)."""
    save(pixels("RGB", 8), tmp_path / "in.png")
    failed = "Unable to allocate 2.41 GiB for an array with shape (18000, 18000) and data type float64"

    def raising(err: Exception) -> Callable[..., None]:
        def compute(*args: object) -> None:
            raise err
        return compute

    def torch_allocating(*args: object) -> None:
        torch.empty(2**50, dtype=torch.uint8)

    for compute, said in ((raising(MemoryError(failed)), failed), (raising(MemoryError()), "an allocation failed"),
                          (torch_allocating, "an allocation of 1125899906842624 bytes failed")):
        monkeypatch.setattr(sr, "super_resolve", compute)
        status, err = sr_in_process(capsys, str(tmp_path / "in.png"), "--scale", "2", "--model", str(tiny),
                                    "-o", str(tmp_path / "out.png"))
        assert (status, err) == (1, f"rlcsc sr: error: out of memory: {said}\n")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "m.pt"]
    cuda = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.38 "
            "GiB is free. Including non-PyTorch memory, this process has 77.80 GiB memory in use.")  # torch's words
    monkeypatch.setattr(sr, "super_resolve", raising(torch.OutOfMemoryError(cuda)))
    assert sr_in_process(capsys, str(tmp_path / "in.png"), "--scale", "2", "--model", str(tiny), "-o",
                         str(tmp_path / "out.png")) == (1, "rlcsc sr: error: out of memory: an allocation of 2.00 GiB "
                                                           "failed\n")
    monkeypatch.setattr(sr, "super_resolve", raising(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # any other error of torch's is not called one of memory
        sr_in_process(capsys, str(tmp_path / "in.png"), "--scale", "2", "--model", str(tiny), "-o",
                      str(tmp_path / "out.png"))


def test_a_small_image_is_charged_for_its_own_feature_maps_not_a_whole_tile() -> None:
    """On the CPU the network's maps of one tile count, a tile no larger than the image: a thumbnail at x2
    needs megabytes (it was charged 1.6 GiB for K25, and refused where less was free)."""
    from rlcsc.imageio import Header
    from rlcsc.models.rlcsc import RLCSC
    from rlcsc.sr import BYTES_PER_SAMPLE, MAPS_PER_PIXEL, memory_needed

    k25, cpu = RLCSC(), torch.device("cpu")
    assert (memory_needed(Header(24, 20, 3, 8, 1), 2, k25, cpu)
            == BYTES_PER_SAMPLE * 48 * 40 * 3 + 48 * 40 * MAPS_PER_PIXEL * 256 * 4)
    assert memory_needed(Header(24, 20, 3, 8, 1), 2, k25, cpu) < 2**24
    big = memory_needed(Header(3000, 2000, 3, 8, 1), 2, k25, cpu)
    assert big - BYTES_PER_SAMPLE * 6000 * 4000 * 3 > 2**30  # a whole tile's maps, with its context


def test_an_output_s_format_is_its_suffix_s_in_any_case() -> None:
    from rlcsc.imageio import format_of

    names = {"a.png": "PNG", "a.PNG": "PNG", "a.jpg": "JPEG", "a.jpeg": "JPEG", "a.JPEG": "JPEG", "a.bmp": "BMP",
             "a.tif": "TIFF", "a.tiff": "TIFF", "a.Tif": "TIFF"}
    assert {name: format_of(Path(name)) for name in names} == names
    for name in ("a", "a.png.txt"):
        with pytest.raises(RlcscError, match="cannot tell an image format"):
            format_of(Path(name))
    for name, fmt in (("a.webp", "WEBP"), ("a.GIF", "GIF")):  # formats read here (Pillow's), none of them written
        with pytest.raises(RlcscError, match=f"^{name} names {fmt}, which is read but not written here; end it in"):
            format_of(Path(name))


def test_a_missing_image_is_named_once(tmp_path: Path) -> None:
    from rlcsc.imageio import read_header, read_image

    for read in (read_image, read_header):
        with pytest.raises(RlcscError) as err:
            read(tmp_path / "none.png")
        assert str(err.value) == f"cannot read image {tmp_path / 'none.png'}: No such file or directory"


def test_an_amount_of_memory_reads_in_the_largest_unit_that_shows_it() -> None:
    amounts = {10: "10 bytes", 2000: "2.0 KiB", 0.05 * 2**20: "51.2 KiB", 0.1 * 2**20: "0.1 MiB", 5 * 2**20: "5.0 MiB",
               0.1 * 2**30: "0.1 GiB", 3 * 2**30: "3.0 GiB"}
    assert {size: sr._amount(size) for size in amounts} == amounts


def test_jpeg_and_bmp_refuse_any_alpha_and_16_bits() -> None:
    """JPEG and BMP hold neither an alpha channel (grey+alpha as much as RGBA) nor 16 bits per channel; PNG and
    TIFF hold both."""
    from rlcsc.imageio import output_format

    for name in ("out.jpg", "out.bmp"):
        for mode, bits in (("LA", 8), ("RGBA", 8), ("L", 16), ("RGB", 16)):
            with pytest.raises(RlcscError, match="write .png or .tif instead"):
                output_format(Path(name), mode, bits)
        assert output_format(Path(name), "RGB", 8) in ("JPEG", "BMP")
    for name in ("out.png", "out.tif"):
        assert ([output_format(Path(name), mode, 16) for mode in ("LA", "RGBA")]
                == [name[4:].upper().replace("TIF", "TIFF")] * 2)


def test_a_palette_with_a_transparent_entry_counts_four_channels_in_its_header(tmp_path: Path) -> None:
    """A palette PNG with a tRNS chunk is read as RGBA, so its header counts 4 channels (3 without tRNS), as
    the memory and the output format are judged from it before any pixel is decoded."""
    rgb = pixels("RGB", 8, (8, 6))
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "pt.png", transparency=0)
    assert [read_header(tmp_path / n).channels for n in ("p.png", "pt.png")] == [3, 4]
    assert read_picture(tmp_path / "pt.png").mode == "RGBA"


def test_the_cpu_is_charged_for_a_tile_with_its_context_and_a_gpu_for_no_tile() -> None:
    """K25 has 30 layers of 3x3 (K + 5): a 512-pixel CPU tile is computed with 30 pixels of context on each side,
    its 256-channel float32 maps held MAPS_PER_PIXEL deep; on a GPU only the float64 samples count."""
    from rlcsc.imageio import Header
    from rlcsc.sr import BYTES_PER_SAMPLE, MAPS_PER_PIXEL, memory_needed

    k25, header = RLCSC(), Header(3000, 2000, 3, 8, 1)
    samples = BYTES_PER_SAMPLE * 6000 * 4000 * 3
    assert memory_needed(header, 2, k25, torch.device("cpu")) == samples + 572 * 572 * MAPS_PER_PIXEL * 256 * 4
    assert memory_needed(header, 2, k25, torch.device("cuda")) == samples


def test_the_memory_available_is_within_the_container_s_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """MemAvailable, unless the cgroup v2 limit less what the container uses is smaller."""
    files = {"/proc/meminfo": "MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n",
             "/sys/fs/cgroup/memory.max": f"{4 * 2**30}\n", "/sys/fs/cgroup/memory.current": f"{2**30}\n"}

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        if str(self) not in files:
            raise FileNotFoundError(str(self))
        return files[str(self)]

    monkeypatch.setattr(Path, "read_text", read_text)
    assert sr.available_memory() == 3 * 2**30  # the container's 4 GiB, 1 GiB of it used
    files["/sys/fs/cgroup/memory.max"] = f"{64 * 2**30}\n"
    assert sr.available_memory() == 8000000 * 1024  # the machine's, below a limit it does not reach
    files["/sys/fs/cgroup/memory.max"] = "max\n"
    assert sr.available_memory() == 8000000 * 1024
    del files["/sys/fs/cgroup/memory.max"]
    assert sr.available_memory() == 8000000 * 1024  # no cgroup v2
    files["/proc/self/statm"] = "262144 1000 500 1 0 2000 0\n"  # the pages the process has mapped
    monkeypatch.setattr(sr.resource, "getrlimit", lambda kind: (5 * 2**30, sr.resource.RLIM_INFINITY))
    assert sr.available_memory() == 5 * 2**30 - 262144 * os.sysconf("SC_PAGE_SIZE")  # ulimit -v, less what is mapped


def test_what_cannot_be_done_is_one_line_before_any_work(tiny: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    save(pixels("RGBA", 8), tmp_path / "rgba.png")
    save(pixels("RGB", 16), tmp_path / "rgb16.tif")
    save(pixels("RGB", 8), tmp_path / "rgb.png")
    Image.fromarray(pixels("RGB", 8)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    tifffile.imwrite(tmp_path / "float.tif", np.random.default_rng(0).random((9, 7), np.float32))
    model = ["--model", str(tiny)]
    cases = [
        (["rgba.png", "-o", "out.jpg", *model], "JPEG cannot hold the alpha channel of this RGBA image"),
        (["rgba.png", "-o", "out.bmp", *model], "BMP cannot hold the alpha channel"),
        (["rgb16.tif", "-o", "out.jpg", *model], "JPEG holds 8 bits per channel and this image has 16"),
        (["rgb.png", "-o", "out.webp", *model], "out.webp names WEBP, which is read but not written here"),
        (["rgb.png", "-o", "out.xyz", *model], "cannot tell an image format from the name out.xyz"),
        (["rgb.png", "-o", "outputs/", *model], f"-o {tmp_path / 'outputs'} is no folder, and its name says no image "
                                                "format: make the folder first, or end the file's name in .png"),
        (["rgb.png", "-o", "nowhere/out.png", *model], f"folder {tmp_path / 'nowhere'} (of -o "
                                                       f"{tmp_path / 'nowhere' / 'out.png'}) does not exist"),
        (["rgb.png", "-o", "rgb.png/out.png", *model], f"folder {tmp_path / 'rgb.png'} (of -o "
                                                       f"{tmp_path / 'rgb.png' / 'out.png'}) is a file, not a folder"),
        (["cmyk.jpg", "-o", "out.png", *model], "mode CMYK is not supported"),
        (["float.tif", "-o", "out.png", *model], "mode F is not supported"),
    ]
    for (name, _, out, *rest), message in cases:
        status, err = sr_in_process(capsys, str(tmp_path / name), "--scale", "3", "-o", str(tmp_path / out), *rest)
        assert status == 1 and message in err and len(err.strip().splitlines()) == 1, (name, out, err)
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))
    pix = b"".join(bytes([10, 20, 30, 128]) * 7 for _ in range(9))  # a 7x9 BMP with an alpha mask (V4 header)
    dib = struct.pack("<IiiHHIIiiII", 108, 7, 9, 1, 32, 3, len(pix), 2835, 2835, 0, 0)
    dib += struct.pack("<IIII", 0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000) + b"BGRs" + bytes(48)
    (tmp_path / "alpha.bmp").write_bytes(b"BM" + struct.pack("<IHHI", 14 + len(dib) + len(pix), 0, 0, 14 + len(dib))
                                         + dib + pix)  # into a folder, as alpha.bmp: which holds no alpha
    (tmp_path / "out").mkdir()
    status, err = sr_in_process(capsys, str(tmp_path / "rgb.png"), str(tmp_path / "alpha.bmp"), "--scale", "3",
                                "-o", str(tmp_path / "out"), *model)
    assert status == 1 and err.strip() == (f"rlcsc sr: error: {tmp_path / 'alpha.bmp'}: BMP cannot hold the alpha "
                                           "channel of this RGBA image; write .png or .tif instead"), err
    assert not any((tmp_path / "out").iterdir())  # the first image was not computed either


def test_several_images_go_into_a_folder_each_under_its_name(tiny: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    """The results of several images are those of each image alone, in the folder under the images' names;
    one image with a folder for -o goes there too."""
    images = {"a.png": ("RGB", 8), "b.tif": ("LA", 16), "c.jpg": ("L", 8)}
    for name, (mode, bits) in images.items():
        save(pixels(mode, bits, seed=len(name) + ord(name[0])), tmp_path / name)
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in images:
        sr_file(tmp_path / name, alone / name, 3, tiny, False, precision="fp32")
    together = tmp_path / "together"
    together.mkdir()
    status, err = sr_in_process(capsys, *(str(tmp_path / n) for n in images), "--scale", "3", "--model", str(tiny),
                                "-o", str(together), "--precision", "fp32")
    lines = [line for line in err.splitlines() if " -> " in line]  # the lines said, not the progress bars
    assert status == 0 and [line.split()[0] for line in lines] == ["1/3", "2/3", "3/3"], err
    assert [line.split()[1] for line in lines] == [str(tmp_path / n) for n in images]
    assert sorted(p.name for p in together.iterdir()) == sorted(images)
    for name in images:
        assert np.array_equal(load(together / name), load(alone / name)), name
    one = tmp_path / "one"
    one.mkdir()
    status, err = sr_in_process(capsys, str(tmp_path / "a.png"), "--scale", "3", "--model", str(tiny), "-o", str(one),
                                "--precision", "fp32")
    assert status == 0 and f"-> {one / 'a.png'} " in err and not err.startswith("1/1")
    assert (one / "a.png").read_bytes() == (together / "a.png").read_bytes()


def test_into_a_folder_a_format_that_is_read_but_not_written_becomes_png(tiny: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    rgb = pixels("RGB", 8)
    Image.fromarray(rgb).save(tmp_path / "a.gif")
    Image.fromarray(rgb).save(tmp_path / "b.webp", lossless=True)
    netpbm(tmp_path / "c.PGM", b"P5", 4095, pixels("L", 8).astype(np.uint16) * 16)
    save(rgb, tmp_path / "d.JPG")
    out = tmp_path / "out"
    out.mkdir()
    names = ("a.gif", "b.webp", "c.PGM", "d.JPG")
    status, err = sr_in_process(capsys, *(str(tmp_path / n) for n in names), "--scale", "2", "--model", str(tiny),
                                "-o", str(out))
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png", "d.JPG"]
    assert load(out / "c.png").dtype == np.uint16 and load(out / "a.png").shape == (18, 14, 3)


def test_what_stops_one_image_of_several_stops_all_before_any_work(tiny: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """A mistake about any image is one line before the first is computed: nothing is written."""
    for name in ("a.png", "b.png", "sub/b.png", "in/a.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        save(pixels("RGB", 8), tmp_path / name)
    Image.fromarray(pixels("RGB", 8)).save(tmp_path / "a.gif")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    png_header(tmp_path / "huge.png", 12000, 12000, 8, 0)
    Image.fromarray(pixels("RGB", 8)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    tifffile.imwrite(tmp_path / "float.tif", np.random.default_rng(0).random((9, 7), np.float32))
    tifffile.imwrite(tmp_path / "signed16.tif", pixels("L", 16).astype(np.int16))
    Image.fromarray(pixels("L", 16).astype(np.uint16)).save(tmp_path / "lzw16.tif", compression="tiff_lzw")
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "dirs" / "a.png").mkdir(parents=True)  # a folder of the result's name
    (out / "b.png").write_bytes(b"keep me")
    (tmp_path / "link.png").symlink_to(tmp_path / "nowhere.png")
    cases = [
        (["a.png", "b.png"], "file.png", "is not a folder; with 2 images, name the existing folder"),
        (["a.png", "sub/b.png", "b.png"], "out", "two results would be named b.png"),
        (["a.gif", "a.png"], "empty", "two results would be named a.png"),  # a GIF's result is a PNG
        (["a.png", "b.png"], "out", "b.png exists; pass --overwrite"),
        (["a.png"], "link.png", "link.png exists; pass --overwrite"),  # a symbolic link to nothing
        (["a.png", "b.png"], "dirs", f"{tmp_path / 'dirs' / 'a.png'} is a folder, which {tmp_path / 'a.png'}'s "
                                     "result cannot replace; move it away"),
        (["a.png", "bad.png"], "empty", "cannot read image"),
        (["a.png", "huge.png"], "empty", "huge.png is 12000x12000"),
        (["a.png", "cmyk.jpg"], "empty", "mode CMYK is not supported"),
        (["a.png", "float.tif"], "empty", "mode F is not supported"),
        (["a.png", "signed16.tif"], "empty", "16-bit TIFF of 1 int16 sample(s) per pixel, photometric MINISBLACK, "
                                             "is not supported"),
        *([(["a.png", "lzw16.tif"], "empty", "its LZW compression needs the imagecodecs package")]
          if importlib.util.find_spec("imagecodecs") is None else []),  # which tifffile decodes LZW with
        (["in/a.png"], "in", "is the input file"),
        (["a.png", "in"], "out", f"{tmp_path / 'in'} is a folder; name the image files in it"),
    ]
    for names, target, message in cases:
        status, err = sr_in_process(capsys, *(str(tmp_path / n) for n in names), "--scale", "2", "--model", str(tiny),
                                    "-o", str(tmp_path / target), "--max-memory", "8")
        assert status == 1 and message in err and len(err.strip().splitlines()) == 1, (names, err)
    status, err = sr_in_process(capsys, str(tmp_path / "a.png"), "--scale", "2", "--model", str(tiny), "-o",
                                str(tmp_path / "dirs"), "--overwrite")
    assert status == 1 and "a.png is a folder, which" in err  # --overwrite replaces a file, never a folder
    assert [p.name for p in out.iterdir()] == ["b.png"] and (out / "b.png").read_bytes() == b"keep me"
    assert [p.name for p in (tmp_path / "in").iterdir()] == ["a.png"] and not list((tmp_path / "empty").iterdir())
    assert not (tmp_path / "file.png").exists() and (tmp_path / "link.png").is_symlink()
