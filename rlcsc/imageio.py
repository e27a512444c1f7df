"""Reading and writing image files: uint8 arrays for the data stages, full-precision pictures for `rlcsc sr`.

Pillow reads and writes 8-bit files, but reads a 16-bit colour PNG or PPM as 8-bit; so 16-bit PNG goes
through pypng, 16-bit TIFF (and a TIFF turned by its orientation tag) through tifffile, and binary PGM and PPM
of more than 8 bits are read here. Every reader's pixels
are turned upright by the file's EXIF orientation in one place (`_upright`), and the file's ICC colour
profile goes with the picture into the output. A picture's size is known from its file's header before any
pixel is decoded (`read_header`), for every reader alike: `rlcsc sr` decides from it whether the image
fits in memory, a limit that replaces Pillow's own (which the 16-bit readers would not apply).
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import png
import tifffile
from PIL import Image

from rlcsc.atomic import atomically
from rlcsc.errors import RlcscError
from rlcsc.rounding import im2uint

MODES = {2: "LA", 3: "RGB", 4: "RGBA"}  # channels -> mode; (H, W) pixels are "L"
# The Pillow modes `read_picture` reads (palette and bilevel converted), besides 16-bit grey ("I;16...").
PILLOW_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
SAVE_OPTIONS = {"JPEG": {"quality": 95}, "TIFF": {"compression": "tiff_deflate"}}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
PNM_MAGIC = (b"P2", b"P3", b"P5", b"P6")  # grey and colour Netpbm, plain (ASCII) and binary
EXIF_ORIENTATION = 0x0112
# What Pillow and tifffile raise for a file they cannot read: damaged (tags of the wrong type or count, offsets
# out of range, no first page, a header cut short), not an image, or over Pillow's decompression-bomb limit.
READ_ERRORS = (OSError, ValueError, SyntaxError, LookupError, TypeError, ArithmeticError, struct.error,
               Image.DecompressionBombError)
# ... and what the 16-bit readers raise besides: pypng lets zlib's error for damaged pixel data through, and
# tifffile allocates what a damaged strip's byte count says.
PICTURE_ERRORS = (*READ_ERRORS, png.Error, zlib.error, MemoryError)
# tifffile logs on stderr what it finds wrong in a file; what makes a file unreadable is one error line here.
logging.getLogger("tifffile").setLevel(logging.CRITICAL)
# A PNG's tRNS chunk (one colour or grey value that is transparent) in an image without alpha: not kept.
TRANSPARENT_COLOUR_DROPPED = "its transparent colour dropped: the output has no alpha"


def _unreadable(path: Path, err: BaseException) -> RlcscError:
    """One clear error for an image file that cannot be read: the system's reason alone where it names the file."""
    why = err.strerror if isinstance(err, OSError) and err.filename and err.strerror else err
    return RlcscError(f"cannot read image {path}: {why}")


def _regular(path: Path) -> None:
    """One clear error for a path that is not a file to read: a FIFO or a device would never end."""
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a FIFO, socket or device)"
        raise RlcscError(f"{path} is {kind}; name an image file")


def read_image(path: Path) -> np.ndarray:
    """An image file as uint8 (H, W) if single-channel, else (H, W, 3) RGB."""
    _regular(path)
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im if im.mode == "L" else im.convert("RGB"))
    except READ_ERRORS as err:
        raise _unreadable(path, err) from None


def image_size(path: Path) -> tuple[int, int]:
    """(rows, cols) of an image file, from its header alone."""
    _regular(path)
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except READ_ERRORS as err:
        raise _unreadable(path, err) from None


@dataclass(frozen=True)
class Picture:
    """Float64 pixels, nominally in [0, 1] ((H, W) grey, else (H, W, C) grey+alpha, RGB or RGBA), upright, the
    bits per sample (8 or 16), `note`: how reading changed the file's pixels, if it did, and `icc`: the file's
    ICC colour profile, if it had one (the colour space its values are in; written with the output)."""

    pixels: np.ndarray
    bits: int
    note: str = ""
    icc: bytes | None = None

    @property
    def mode(self) -> str:
        return "L" if self.pixels.ndim == 2 else MODES[self.pixels.shape[2]]

    def __str__(self) -> str:
        h, w = self.pixels.shape[:2]
        return f"{w}x{h} {self.mode} {self.bits}-bit" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Header:
    """What an image file's header says of the picture `read_picture` makes of it: its size, channels
    (before conversions: a palette counts 3, or 4 with transparency) and bits per sample, and its frames (None
    when one after the first is damaged: only the first is read)."""

    width: int
    height: int
    channels: int
    bits: int
    frames: int | None


@contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """Pillow's image of `path`, decoded only when asked, without Pillow's pixel limit: `rlcsc sr` checks
    what an image costs from its header (`read_header`), for the 16-bit readers too."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as im:
            yield im
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _kind(path: Path) -> str:
    """Which reader reads `path` at its full precision: "tiff" (tifffile: a 16-bit TIFF, or an 8-bit grey, RGB or
    palette one turned by its orientation tag, whose pixels Pillow scrambles when they are stored uncompressed;
    Pillow turns other TIFFs upright itself), "png16", "pnm16" (a binary PGM or PPM of more than 8 bits) or
    "pillow"."""
    with open(path, "rb") as f:
        head = f.read(26)
    if head[:4] in TIFF_MAGIC:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise ValueError("it holds no readable image")
            page = tif.pages.first
            turned = _orientation(page.tags.valueof(EXIF_ORIENTATION, 1)) != 1
            plain = page.dtype == np.uint8 and page.photometric in (tifffile.PHOTOMETRIC.MINISBLACK,
                                                                    tifffile.PHOTOMETRIC.RGB,
                                                                    tifffile.PHOTOMETRIC.PALETTE)
            if page.bitspersample == 16 or (turned and plain and page.compression in tifffile.TIFF.DECOMPRESSORS):
                return "tiff"
    if head[:2] in PNM_MAGIC:
        with _opened(path) as im:
            return "pnm16" if _pnm16(im) else "pillow"
    return "png16" if head.startswith(PNG_MAGIC) and head[24:25] == b"\x10" else "pillow"  # IHDR's bit depth


def _pnm16(im: Image.Image) -> tuple[int, int] | None:
    """(maxval, offset of the pixels) of Pillow's image `im` of a binary PGM or PPM of more than 8 bits (its
    maxval over 255), which Pillow would scale to 8 bits if colour; None for one of 8 bits. A plain one of more
    than 8 bits is an error."""
    tile = im.tile[0]
    maxval = 65535 if tile.args == "I;16B" else tile.args[-1] if tile.codec_name != "raw" else 255
    if maxval <= 255:
        return None
    if tile.codec_name == "ppm_plain":
        raise ValueError("a plain (ASCII) PGM or PPM of more than 8 bits is not supported; save it as binary (P5, P6)")
    return maxval, tile.offset


def _orientation(value: object) -> int:
    """An EXIF orientation (TIFF tag 274, also a JPEG's or a PNG's EXIF): 1 (upright) to 8; 1 for a value
    outside them."""
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _exif_orientation(im: Image.Image) -> int | None:
    """The EXIF orientation that Pillow's image `im` holds in its header (a JPEG's APP1, a PNG's eXIf chunk
    before its pixels), read without decoding a pixel (Pillow's `getexif` decodes a PNG to look past them);
    None for an EXIF block that cannot be read, whose orientation is not known."""
    exif = Image.Exif()
    if "exif" in im.info:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow's warnings of a damaged block, on stderr
                exif.load(im.info["exif"])
        except READ_ERRORS:
            return None
    return _orientation(exif.get(EXIF_ORIENTATION, 1))


def _upright(x: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixels `x` ((H, W) or (H, W, C)) as they are meant to be seen: EXIF `orientation` 2-8 undone
    (mirrored, turned, or both; 5-8 swap height and width)."""
    turn = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
            5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
            8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(turn[orientation](x)) if orientation in turn else x


def _sized(width: int, height: int, orientation: int) -> tuple[int, int]:
    """(width, height) of stored pixels of `width` x `height` once upright; an error for an image without a pixel."""
    if width < 1 or height < 1:
        raise ValueError(f"it is {width}x{height}, without a pixel")
    return (height, width) if orientation >= 5 else (width, height)


def _png_planes(path: Path) -> int:
    """The planes of the PNG file `path` as pypng reads them, from its header."""
    with open(path, "rb") as f:
        reader = png.Reader(file=f)
        reader.preamble()
        return reader.planes


def _check_tiff(page: tifffile.TiffPage) -> None:
    """One error for a TIFF page that `_read_tiff` cannot read, from its tags alone."""
    channels = {tifffile.PHOTOMETRIC.MINISBLACK: (1, 2), tifffile.PHOTOMETRIC.RGB: (3, 4),
                tifffile.PHOTOMETRIC.PALETTE: (1,)}.get(page.photometric, ())
    if page.dtype not in (np.uint8, np.uint16) or page.samplesperpixel not in channels:
        photometric = getattr(page.photometric, "name", page.photometric)
        turned = page.bitspersample != 16  # read here for its orientation tag
        raise ValueError(f"{page.bitspersample}-bit TIFF{' turned by its orientation tag' if turned else ''} of "
                         f"{page.samplesperpixel} {page.dtype} sample(s) per pixel, photometric {photometric}, is not "
                         f"supported; save it as grey or RGB, with or without alpha{', or upright' if turned else ''}")
    if page.compression not in tifffile.TIFF.DECOMPRESSORS:  # LZW, JPEG and others need `imagecodecs`
        compression = getattr(page.compression, "name", page.compression)
        raise ValueError(f"its {compression} compression needs the imagecodecs package (pip install imagecodecs); "
                         "or save it uncompressed or deflate-compressed")


def read_header(path: Path) -> Header:
    """The header of image file `path`; no pixel is decoded, whatever the image's size. A picture that
    `read_picture` cannot make of it (its mode is not supported, or it has no pixel) is one error here already."""
    _regular(path)
    try:
        kind = _kind(path)
        if kind == "tiff":
            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                _check_tiff(page)
                size = _sized(page.imagewidth, page.imagelength, _orientation(page.tags.valueof(EXIF_ORIENTATION, 1)))
                palette = page.photometric == tifffile.PHOTOMETRIC.PALETTE  # read as 8-bit RGB
                return Header(*size, 3 if palette else page.samplesperpixel, 8 if palette else page.bitspersample,
                              len(tif.pages))
        with _opened(path) as im:
            if kind == "png16":  # read by pypng; Pillow opens 16-bit grey+alpha as RGBA
                channels = _png_planes(path)
            elif kind == "pnm16":
                channels = 1 if im.mode == "I" else 3
            elif im.mode in PILLOW_MODES or im.mode.startswith("I;16"):
                channels = (4 if im.has_transparency_data else 3) if im.mode in ("P", "PA") else len(im.getbands())
            else:
                raise ValueError(f"mode {im.mode} is not supported; save it as grey or RGB, with or without alpha, "
                                 "8 or 16 bits per channel")
            bits = 16 if kind in ("png16", "pnm16") or im.mode.startswith("I;16") else 8
            size = _sized(im.width, im.height, _exif_orientation(im) or 1)
            return Header(*size, channels, bits, _frames(im))
    except PICTURE_ERRORS as err:
        raise _unreadable(path, err) from None


def _frames(im: Image.Image) -> int | None:
    """The frames of Pillow's image `im` (an animation's or a multi-page file's), counted by reading each one's
    header; None when one after the first cannot be read."""
    try:
        return getattr(im, "n_frames", 1)
    except READ_ERRORS:
        return None


def read_picture(path: Path) -> Picture:
    """An image file at its full precision (8 or 16 bits), upright by its EXIF orientation, with its colour
    profile: PNG, JPEG, BMP, TIFF, or another format Pillow reads. Of several frames, the first; the note says
    so, and what else reading changed or dropped."""
    frames = read_header(path).frames
    try:
        kind, turned = _kind(path), False
        if kind == "tiff":
            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                picture, orientation = _read_tiff(page), _orientation(page.tags.valueof(EXIF_ORIENTATION, 1))
                icc = page.iccprofile
        else:
            with _opened(path) as im:
                orientation, icc = _exif_orientation(im), im.info.get("icc_profile")
                turned = im.format == "TIFF" and _orientation(im.tag_v2.get(EXIF_ORIENTATION, 1)) != 1  # by Pillow
                picture = (_read_png16(path) if kind == "png16" else _read_pnm16(path, im) if kind == "pnm16"
                           else _read_pillow(im))
    except PICTURE_ERRORS as err:
        raise _unreadable(path, err) from None
    notes = ["the first of its frames: a later one is damaged" if frames is None else
             f"the first of its {frames} frames" if frames > 1 else "",
             "turned upright by its EXIF orientation" if orientation not in (1, None) or turned else "",
             "not turned: its EXIF block is damaged" if orientation is None else "", picture.note]
    return Picture(_upright(picture.pixels, orientation or 1), picture.bits, "; ".join(filter(None, notes)),
                   icc or None)


def _read_pillow(im: Image.Image) -> Picture:
    """The stored pixels of Pillow's image `im` (not turned by its orientation)."""
    notes = []
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if im.has_transparency_data else "RGB")
        notes.append("converted from palette")
    elif im.mode == "1":
        im = im.convert("L")
        notes.append("converted from bilevel")
    if "transparency" in im.info and not im.mode.endswith("A"):
        notes.append(TRANSPARENT_COLOUR_DROPPED)
    if im.mode.startswith("I;16"):
        return Picture(np.asarray(im, np.float64) / 65535, 16, "; ".join(notes))
    return Picture(np.asarray(im) / 255.0, 8, "; ".join(notes))


def _read_png16(path: Path) -> Picture:
    with open(path, "rb") as f:
        width, height, rows, info = png.Reader(file=f).read()
        x = np.vstack(list(rows)).reshape(height, width, info["planes"])
    note = TRANSPARENT_COLOUR_DROPPED if "transparent" in info else ""
    return Picture((x[..., 0] if info["planes"] == 1 else x) / 65535.0, 16, note)


def _read_pnm16(path: Path, im: Image.Image) -> Picture:
    """The pixels of a binary PGM or PPM of more than 8 bits (big-endian 16-bit samples), divided by its maxval."""
    maxval, offset = _pnm16(im)
    shape = (im.height, im.width) + (() if im.mode == "I" else (3,))
    x = np.fromfile(path, ">u2", count=int(np.prod(shape)), offset=offset)
    if x.size < np.prod(shape):
        raise ValueError("its pixel data is truncated")
    if x.max(initial=0) > maxval:
        raise ValueError(f"a sample exceeds its maxval {maxval}")
    return Picture(x.reshape(shape) / float(maxval), 16)


def _read_tiff(page: tifffile.TiffPage) -> Picture:
    """The pixels of a grey or RGB TIFF page (alpha kept) of 8 or 16 bits, or RGB of a palette one (its colour
    map's 16-bit entries cut to 8 bits, as Pillow reads them); colour stored premultiplied by its alpha
    (ExtraSamples 1, associated alpha) is divided by it, as Pillow reads such a file."""
    x = page.asarray()
    if page.photometric == tifffile.PHOTOMETRIC.PALETTE:
        return Picture((page.colormap[:, x] >> 8).transpose(1, 2, 0) / 255.0, 8, "converted from palette")
    if "S" in page.axes:
        x = np.moveaxis(x, page.axes.index("S"), -1)
    x = (x[..., 0] if x.ndim == 3 and x.shape[2] == 1 else x) / float(np.iinfo(x.dtype).max)
    if page.extrasamples[:1] == (tifffile.EXTRASAMPLE.ASSOCALPHA,):
        colour, alpha = x[..., :-1], x[..., -1:]
        x[..., :-1] = np.minimum(np.divide(colour, alpha, out=np.zeros_like(colour), where=alpha > 0), 1)
    return Picture(x, page.bitspersample)


def format_of(path: Path) -> str:
    """The format that `path`'s suffix names, or one clear error."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        read = Image.registered_extensions().get(path.suffix.lower())  # a format Pillow reads, not one written here
        said = (f"{path.name} names {read}, which is read but not written here" if read
                else f"cannot tell an image format from the name {path.name}")
        raise RlcscError(f"{said}; end it in .png, .jpg, .bmp or .tif")
    return fmt


def output_format(path: Path, mode: str, bits: int) -> str:
    """The format that `path`'s suffix names, or one clear error if it cannot hold a `mode` picture of `bits` bits."""
    fmt = format_of(path)
    if fmt in ("JPEG", "BMP") and mode.endswith("A"):
        raise RlcscError(f"{fmt} cannot hold the alpha channel of this {mode} image; write .png or .tif instead")
    if fmt in ("JPEG", "BMP") and bits == 16:
        raise RlcscError(f"{fmt} holds 8 bits per channel and this image has 16; write .png or .tif instead")
    return fmt


def write_picture(picture: Picture, path: Path) -> None:
    """Write `picture` rounded MATLAB-style to its bit depth, in the format `path` names, with its colour
    profile where the format holds one (all but BMP), atomically."""
    fmt = output_format(path, picture.mode, picture.bits)
    data = im2uint(picture.pixels, picture.bits).astype(np.uint8 if picture.bits == 8 else np.uint16)
    alpha = picture.mode.endswith("A")

    def write(tmp: Path) -> None:
        if fmt == "TIFF" and picture.bits == 16:
            tifffile.imwrite(tmp, data, photometric="minisblack" if picture.mode in ("L", "LA") else "rgb",
                             extrasamples=("unassalpha",) if alpha else None, compression="zlib", metadata=None,
                             iccprofile=picture.icc)
        elif fmt == "PNG" and picture.bits == 16:
            image = io.BytesIO()
            png.Writer(data.shape[1], data.shape[0], greyscale=picture.mode in ("L", "LA"), alpha=alpha,
                       bitdepth=16).write(image, data.reshape(data.shape[0], -1))
            chunks = list(png.Reader(bytes=image.getvalue()).chunks())
            if picture.icc:  # iCCP: a name, a NUL, the compression method (0: zlib), the profile compressed
                chunks.insert(1, (b"iCCP", b"ICC profile\0\0" + zlib.compress(picture.icc)))
            with open(tmp, "wb") as f:
                png.write_chunks(f, chunks)
        else:
            profile = {"icc_profile": picture.icc} if picture.icc and fmt != "BMP" else {}
            Image.fromarray(data).save(tmp, format=fmt, **SAVE_OPTIONS.get(fmt, {}), **profile)

    try:
        atomically(write, path)
    except (OSError, ValueError, png.Error) as err:
        raise RlcscError(f"cannot write {path}: {err}") from None
