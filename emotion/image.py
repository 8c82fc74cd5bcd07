"""Decode an uploaded photo into the RGB array the engine works on, or say why it cannot be;
encode an annotated one as PNG.

Everything happens in memory; nothing is written to disk.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageFile

logger = logging.getLogger(__name__)

MAX_PIXELS = 50_000_000  # 50 megapixels: above any phone camera; checked before decoding
# load_image's peak memory per pixel, whatever the colour mode or bit depth (the decoded image,
# the RGB one and the array returned; 16-bit, 32-bit and float images are converted a band of rows
# at a time): MAX_PIXELS bound it to 650 MB a photo. tests/test_image.py measures it per mode.
PEAK_BYTES_PER_PIXEL = 13
# A progressive JPEG's decoder passes over the whole picture once a scan, and a scan can be a few
# bytes: counted before decoding. libjpeg writes 10 scans for a progressive colour photo, 6 for grey
# and 18 for CMYK (jpeg_simple_progression); a baseline JPEG has one. On a busy 2-core machine a
# 49-megapixel grey JPEG of 2,005 scans (334 KB) took 127 s; of 50 scans 3.6 s, of 6 scans 1.0 s.
MAX_JPEG_SCANS = 50
MAX_JPEG_MARKERS = 10_000  # a photo has tens (tables, metadata, a table or two a scan)
# What Pillow may decode ("JPEG" includes the MPO JPEGs many cameras write).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
SUPPORTED = "JPEG, PNG, WebP, GIF, BMP, TIFF"  # the same, as a person reads it

# A truncated file must be refused, not decoded as a half-grey picture.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# EXIF orientation -> the transpose that makes the picture upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_WIDE_MODES = ("I", "F")  # 32-bit integers, 32-bit floats
_BAND_PIXELS = 1 << 18  # pixels of a wide image converted at a time: 2 MB as float64
_TRANSPARENT_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# A JPEG marker: 0xFF (any fill bytes) and a code; not a stuffed 0xFF 0x00 inside a scan's data,
# nor a restart marker (0xD0-0xD7), which a scan may have thousands of and which starts nothing.
_JPEG_MARKER = re.compile(rb"\xff+([^\x00\xff\xd0-\xd7])")
_JPEG_PARAMETERLESS = frozenset(b"\x01\xd8\xd9")  # TEM, SOI, EOI: no length follows
_JPEG_SOS = 0xDA  # start of scan


class InvalidImage(ValueError):
    """The data is not an image we can read, or it is too large; the message says which."""


def load_image(data: bytes | str | Path | BinaryIO, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file's bytes (or its path, or an open binary file) -> RGB uint8 (H, W, 3).

    The picture is turned upright by its EXIF orientation; transparency is laid on white;
    grayscale, palette, CMYK and 16-bit images become 8-bit RGB; of an animation, the first frame.
    Raises InvalidImage for anything else, and for images over `max_pixels` before decoding them.
    """
    data = _read_bytes(data)
    if not data:
        raise InvalidImage("The file is empty.")
    # Pillow warns between its own pixel limit (~89 MP) and twice it, and raises above that. The
    # limit that counts is ours, checked right after the header is read, so the warning is
    # silenced and the error refuses the image too. (catch_warnings swaps the process's filter
    # list; a thread that changes filters at the same moment could lose its change.)
    pillow_limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
        except Image.DecompressionBombError as error:
            message = _too_large_message(_header_size(data), min(max_pixels, pillow_limit))
            raise InvalidImage(message) from error
        except Image.UnidentifiedImageError as error:
            raise InvalidImage(_not_an_image_message(data)) from error
        except Exception as error:  # plugins raise many types on malformed headers
            raise InvalidImage(
                "This file is damaged or incomplete and cannot be read as an image."
            ) from error
        width, height = image.size
        if width * height > max_pixels:
            raise InvalidImage(_too_large_message((width, height), max_pixels))
        if width < 1 or height < 1:
            raise InvalidImage(f"This image is {width} x {height} pixels: it has no picture in it.")
        if image.format in ("JPEG", "MPO"):
            _check_jpeg_scans(data)
        try:
            image.load()  # the first frame of an animation
        except Image.DecompressionBombError as error:  # a frame larger than the header said
            raise InvalidImage(_too_large_message(None, min(max_pixels, pillow_limit))) from error
        except Exception as error:  # decoders raise OSError, SyntaxError, ValueError, EOFError...
            raise InvalidImage(
                f"This {image.format} file is damaged or incomplete and cannot be decoded."
            ) from error
    orientation = _exif_orientation(image)
    rgb = _to_rgb(image)
    if rgb is not image:
        image.close()  # frees the decoded pixels before the copy below
    if orientation in _UPRIGHT:
        rgb = rgb.transpose(_UPRIGHT[orientation])
    pixels = np.asarray(rgb)  # read-only, over a copy of the pixels (H, W, 3)
    rgb.close()  # frees Pillow's own before the copy below
    return pixels.copy()  # writeable, C-contiguous


def encode_png(rgb: np.ndarray) -> bytes:
    """An RGB (H, W, 3) uint8 image as PNG file bytes."""
    return _encode(rgb, format="PNG")


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """An RGB (H, W, 3) uint8 image as JPEG file bytes: a tenth of a PNG's size for a photo."""
    return _encode(rgb, format="JPEG", quality=quality)


def _encode(rgb: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buffer, **options)
    return buffer.getvalue()


def _read_bytes(data: bytes | str | Path | BinaryIO) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str | Path):
        try:
            return Path(data).read_bytes()
        except OSError as error:
            raise InvalidImage(f"Cannot read {data}: {error.strerror or error}.") from error
    if hasattr(data, "getvalue"):  # BytesIO, Streamlit's UploadedFile: all of it, wherever it was read to
        data = data.getvalue()
    elif hasattr(data, "read"):
        data = data.read()
    if isinstance(data, bytes):
        return data
    raise TypeError(f"load_image takes bytes, a path or a binary file, not {type(data).__name__}")


def _check_jpeg_scans(data: bytes) -> None:
    """Raise InvalidImage for a JPEG of more than MAX_JPEG_SCANS scans (or MAX_JPEG_MARKERS markers).

    The markers are read as a decoder reads them: a segment's length is skipped (what a metadata
    segment holds is no marker), a scan's data runs to the next marker. Every image of an MPO counts.
    Only a file holding the SOS marker's bytes more than MAX_JPEG_SCANS times is read so: a count
    of bytes takes milliseconds where the markers of a large photo take a second.
    """
    if data.count(b"\xff\xda") <= MAX_JPEG_SCANS:  # every SOS marker is these bytes: few enough
        return
    scans = markers = 0
    position = 2  # after SOI
    while (marker := _JPEG_MARKER.search(data, position)) is not None:
        markers += 1
        if markers > MAX_JPEG_MARKERS:
            raise InvalidImage(
                f"This JPEG has more than {MAX_JPEG_MARKERS:,} markers: it is damaged and cannot be read."
            )
        code, position = marker.group(1)[0], marker.end()
        if code in _JPEG_PARAMETERLESS:
            continue
        if code == _JPEG_SOS:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise InvalidImage(
                    f"This JPEG has more than {MAX_JPEG_SCANS} scans, each a pass over the whole picture: "
                    "it would take too long to decode (photos have at most a few tens)."
                )
        position += int.from_bytes(data[position : position + 2], "big")  # the length counts itself


def _too_large_message(size: tuple[int, int] | None, max_pixels: int) -> str:
    limit = f"the limit is {max_pixels / 1e6:g} megapixels"
    if size is None:
        return f"This image is too large; {limit}."
    width, height = size
    return f"This image is {width} x {height} pixels; {limit}. Please use a smaller image."


def _header_size(data: bytes) -> tuple[int, int] | None:
    """The width and height in the header, read without Pillow's size guard (nothing is decoded)."""
    prefix = data[:16]
    for name in FORMATS:
        factory, accept = Image.OPEN.get(name, (None, None))
        if factory is None or (accept is not None and accept(prefix) is not True):
            continue
        try:
            return factory(io.BytesIO(data), "").size
        except Exception:  # not this format after all; try the next
            continue
    return None


def _not_an_image_message(data: bytes) -> str:
    head = data[:512]
    lowered = head.lstrip().lower()
    if head.startswith(b"%PDF"):
        kind = "a PDF document"
    elif head.startswith(b"PK\x03\x04"):
        kind = "a ZIP archive (or an Office document)"
    elif b"<svg" in lowered:
        kind = "an SVG drawing"
    elif lowered.startswith((b"<!doctype html", b"<html")):
        kind = "a web page (HTML)"
    elif head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"avif"):
        kind = "a HEIC/AVIF photo (save it as JPEG first)"
    else:
        kind = None
    if kind is None:
        return f"This file is not an image we can read ({SUPPORTED})."
    return f"This file is {kind}, not an image we can read ({SUPPORTED})."


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception as error:  # EXIF parsers raise many types; a broken tag must not refuse the photo
        logger.warning("Ignoring unreadable EXIF data: %s", error)
        return 1


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any decoded Pillow image -> mode RGB, 8 bits per channel."""
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in _WIDE_MODES:
        return Image.fromarray(_to_eight_bit(image)).convert("RGB")
    if image.mode in _TRANSPARENT_MODES or "transparency" in image.info:
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        rgb = Image.new("RGB", rgba.size, (255, 255, 255))
        rgb.paste(rgba, mask=rgba)  # blended by its alpha onto white
        return rgb
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise InvalidImage(f"This image's colour mode ({image.mode}) is not supported.") from error


def _to_eight_bit(image: Image.Image) -> np.ndarray:
    """A single-channel 16-bit, 32-bit integer or float image -> uint8 (H, W).

    Converted a band of rows at a time, so that the work in wider types (float64) takes a few
    megabytes whatever the image's size, not several copies of it.
    """
    width, height = image.size
    rows = max(1, _BAND_PIXELS // width)
    spans = [(top, min(height, top + rows)) for top in range(0, height, rows)]
    gray = np.empty((height, width), dtype=np.uint8)
    if image.mode in _SIXTEEN_BIT_MODES:
        for top, bottom in spans:
            values = _band(image, top, bottom).astype(np.uint32)
            gray[top:bottom] = (values * 255 + 32767) // 65535  # 65535 -> 255
        return gray
    extremes = [(float(values.min()), float(values.max())) for values in _finite_bands(image, spans)]
    low, high = min(low for low, _ in extremes), max(high for _, high in extremes)
    if image.mode == "F" and low >= 0.0 and high <= 1.0:
        origin, scale = 0.0, 255.0  # floats in [0, 1]
    elif low >= 0.0 and high <= 255.0:
        origin, scale = 0.0, 1.0  # 8-bit values in a wider type
    elif low >= 0.0 and high <= 65535.0:
        origin, scale = 0.0, 1.0 / 257.0  # 16-bit values in a 32-bit image
    else:
        origin, scale = low, 255.0 / max(high - low, 1e-12)  # anything else: its own range
    for (top, bottom), values in zip(spans, _finite_bands(image, spans), strict=True):
        gray[top:bottom] = np.clip((values - origin) * scale, 0.0, 255.0).round()
    return gray


def _band(image: Image.Image, top: int, bottom: int) -> np.ndarray:
    return np.asarray(image.crop((0, top, image.width, bottom)))


def _finite_bands(image: Image.Image, spans: list[tuple[int, int]]) -> Iterator[np.ndarray]:
    """Each band's values as float64, with NaN and infinities read as 0."""
    for top, bottom in spans:
        values = _band(image, top, bottom).astype(np.float64)
        yield np.nan_to_num(values, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
