"""load_image on a corpus of good and bad files, all built here in memory."""

from __future__ import annotations

import builtins
import io
import struct
import subprocess
import sys
import tempfile
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from emotion import DetectorSettings, InvalidImage, detect_faces, load_image
from emotion import image as image_module
from emotion.image import MAX_PIXELS, PEAK_BYTES_PER_PIXEL
from scripts import hostile
from scripts.samples import REPO

NOT_AN_IMAGE = r"not an image we can read \(JPEG, PNG, WebP, GIF, BMP, TIFF\)"
EXIF_ORIENTATION = 0x0112


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height 8-bit gray pixels but holds a few zero rows (a few bytes)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    rows = zlib.compress(bytes(4 * (width + 1)))  # four filter-byte + zero rows
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def portrait_jpeg(astronaut_rgb) -> bytes:
    return encode(Image.fromarray(astronaut_rgb), "JPEG", quality=92)


# Good files ------------------------------------------------------------------------------------


def test_jpeg(astronaut_rgb, portrait_jpeg):
    rgb = load_image(portrait_jpeg)

    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - astronaut_rgb).mean() < 3
    assert rgb.flags.c_contiguous and rgb.flags.writeable


@pytest.mark.parametrize("format", ["PNG", "WEBP", "BMP", "TIFF"])
def test_lossless_formats_round_trip(astronaut_rgb, format):
    options = {"lossless": True} if format == "WEBP" else {}

    rgb = load_image(encode(Image.fromarray(astronaut_rgb), format, **options))

    np.testing.assert_array_equal(rgb, astronaut_rgb)


def test_paths_and_open_files_as_well_as_bytes(tmp_path, portrait_jpeg):
    path = tmp_path / "portrait.jpg"
    path.write_bytes(portrait_jpeg)
    expected = load_image(portrait_jpeg)

    np.testing.assert_array_equal(load_image(path), expected)
    np.testing.assert_array_equal(load_image(str(path)), expected)
    np.testing.assert_array_equal(load_image(io.BytesIO(portrait_jpeg)), expected)
    np.testing.assert_array_equal(load_image(bytearray(portrait_jpeg)), expected)
    already_read = io.BytesIO(portrait_jpeg)
    already_read.read()  # an upload the page has read once already
    np.testing.assert_array_equal(load_image(already_read), expected)
    with path.open("rb") as file:
        np.testing.assert_array_equal(load_image(file), expected)


def test_grayscale_becomes_three_equal_channels():
    gray = np.tile(np.arange(256, dtype=np.uint8), (10, 1))

    rgb = load_image(encode(Image.fromarray(gray), "PNG"))

    assert rgb.shape == (10, 256, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], gray)


def test_transparency_is_laid_on_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red...
    rgba[:2, :, 3] = 255  # ...opaque in the top half, transparent below
    rgba[2:, :, 3] = 0

    rgb = load_image(encode(Image.fromarray(rgba, mode="RGBA"), "PNG"))

    assert (rgb[:2] == (255, 0, 0)).all()
    assert (rgb[2:] == (255, 255, 255)).all()


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits():
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"

    for format in ("PNG", "TIFF"):
        rgb = load_image(encode(image, format))

        np.testing.assert_array_equal(rgb[0, :, 0], [0, 1, 128, 255])


def test_dark_sixteen_bit_image_stays_dark():
    # All values below 256: still 16-bit, so nearly black, not read as 8-bit values.
    image = Image.fromarray(np.full((2, 2), 200, dtype=np.uint16))

    assert (load_image(encode(image, "PNG")) <= 1).all()


def test_float_tiff_in_zero_to_one():
    image = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")

    np.testing.assert_array_equal(load_image(encode(image, "TIFF"))[0, :, 1], [0, 128, 255])


def test_wide_images_are_scaled_by_their_whole_range_across_bands(monkeypatch):
    monkeypatch.setattr(image_module, "_BAND_PIXELS", 300)  # bands of 100 rows: 7 of them
    values = np.linspace(-10.0, 1000.0, 700 * 3).reshape(700, 3)
    values[0, 0], values[-1, -1] = np.nan, np.inf  # read as 0
    integers = np.nan_to_num(values, nan=0.0, posinf=0.0).astype(np.int32)
    for image in (Image.fromarray(values.astype(np.float32)), Image.fromarray(integers)):
        finite = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0)
        low, high = finite.min(), finite.max()
        expected = np.round((finite - low) * (255.0 / (high - low)))

        gray = load_image(encode(image, "TIFF"))[:, :, 0]

        np.testing.assert_array_equal(gray, expected)


def test_palette_gif():
    palette_image = Image.new("P", (8, 8))
    palette_image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    palette_image.paste(1, (0, 0, 4, 8))
    palette_image.paste(2, (4, 0, 8, 8))

    rgb = load_image(encode(palette_image, "GIF"))

    assert (rgb[:, :4] == (255, 0, 0)).all()
    assert (rgb[:, 4:] == (0, 0, 255)).all()


def test_transparent_gif_is_laid_on_white():
    palette_image = Image.new("P", (8, 8), 1)
    palette_image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    palette_image.paste(0, (0, 0, 8, 4))  # index 0, the transparent one, in the top half

    rgb = load_image(encode(palette_image, "GIF", transparency=0))

    assert (rgb[:4] == (255, 255, 255)).all()
    assert (rgb[4:] == (255, 0, 0)).all()


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (16, 16), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3

    rgb = load_image(data)

    assert rgb.shape == (16, 16, 3)
    assert (rgb == (255, 0, 0)).all()


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red

    rgb = load_image(encode(cmyk, "JPEG", quality=95))

    assert rgb.shape == (16, 16, 3)
    assert np.abs(rgb.astype(int) - (255, 0, 0)).max() <= 8


def test_one_pixel_image_loads_and_has_no_face():
    rgb = load_image(encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"))

    assert rgb.tolist() == [[[10, 20, 30]]]
    assert detect_faces(rgb) == []


def test_blank_image_has_no_face():
    assert detect_faces(load_image(encode(Image.new("RGB", (640, 480), "white"), "JPEG"))) == []


def test_exif_orientation_turns_a_portrait_upright(astronaut_rgb):
    # Stored turned a quarter anticlockwise; EXIF orientation 6 says "turn 90 degrees clockwise".
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(astronaut_rgb)))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    data = encode(stored, "JPEG", quality=95, exif=exif)
    sideways = np.asarray(Image.open(io.BytesIO(data)))
    assert detect_faces(sideways, DetectorSettings(finder="haar")) == []  # upright faces only

    rgb = load_image(data)

    assert rgb.shape == astronaut_rgb.shape
    assert np.abs(rgb.astype(int) - astronaut_rgb).mean() < 3
    assert len(detect_faces(rgb)) == 1


def test_many_faces_survive_encoding(group_photo_rgb):
    rgb = load_image(encode(Image.fromarray(group_photo_rgb), "JPEG", quality=90))

    assert len(detect_faces(rgb)) >= 10


# Bad files -------------------------------------------------------------------------------------


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


BAD_FILES = {
    "text": (b"hello, this is not a picture\n" * 20, NOT_AN_IMAGE),
    "random-bytes": (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), NOT_AN_IMAGE),
    "html": (b"<!DOCTYPE html><html><body><img src='face.jpg'></body></html>", "a web page"),
    "svg": (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>',
        "an SVG drawing",
    ),
    "pdf": (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF\n", "a PDF document"),
    "heic": (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "HEIC"),
}


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("face.jpg", b"not really")
    return buffer.getvalue()


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_files_that_are_not_images_are_refused_with_what_they_are(name):
    data, message = BAD_FILES[name]

    with pytest.raises(InvalidImage, match=message) as raised:
        load_image(data)
    assert "not an image we can read" in str(raised.value)


def test_zip_named_jpg_is_refused(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(zip_bytes())

    with pytest.raises(InvalidImage, match="a ZIP archive.*" + NOT_AN_IMAGE):
        load_image(path)


def test_empty_file():
    with pytest.raises(InvalidImage, match="The file is empty"):
        load_image(b"")


def test_truncated_jpeg_is_refused_not_half_grey(portrait_jpeg):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False

    with pytest.raises(InvalidImage, match="JPEG file is damaged or incomplete"):
        load_image(truncated(portrait_jpeg))


def test_truncated_png_is_refused(astronaut_rgb):
    with pytest.raises(InvalidImage, match="PNG file is damaged or incomplete"):
        load_image(truncated(encode(Image.fromarray(astronaut_rgb), "PNG")))


def test_header_only_jpeg_is_refused(portrait_jpeg):
    with pytest.raises(InvalidImage, match="damaged or incomplete"):
        load_image(portrait_jpeg[:200])
    with pytest.raises(InvalidImage, match="damaged or incomplete"):
        load_image(portrait_jpeg[:-2])  # all but the end marker


def test_decompression_bomb_is_refused_before_decoding():
    bomb = png_header_only(30000, 30000)  # 900 megapixels claimed, ~1 kB of file
    assert len(bomb) < 2000

    with pytest.raises(InvalidImage, match="This image is 30000 x 30000 pixels; the limit is 50 megapixels"):
        load_image(bomb)


@pytest.mark.parametrize("size", [(8000, 7000), (10000, 10000)], ids=["over-our-limit", "pillow-warns"])
def test_images_over_the_pixel_limit_are_refused_without_warnings(size):
    width, height = size
    assert width * height > MAX_PIXELS

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not escape
        with pytest.raises(InvalidImage, match=f"This image is {width} x {height} pixels"):
            load_image(png_header_only(width, height))


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (16, 16)), "JPEG"))
    start_of_frame = data.index(b"\xff\xc0")
    data[start_of_frame + 5 : start_of_frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + frame + b"\x3b"


@pytest.mark.parametrize("make", [jpeg_claiming, gif_claiming], ids=["jpeg", "gif"])
def test_bombs_in_other_formats_are_refused(make):
    with pytest.raises(InvalidImage, match="This image is 40000 x 30000 pixels"):
        load_image(make(40000, 30000))


def test_pillows_own_limit_warns_nothing_and_refuses_clearly(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow warns above 1000 px, raises above 2000
    small = encode(Image.new("RGB", (40, 40), "white"), "PNG")  # 1600 px
    large = encode(Image.new("RGB", (50, 50), "white"), "PNG")  # 2500 px

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(small).shape == (40, 40, 3)
        with pytest.raises(
            InvalidImage, match=r"This image is 50 x 50 pixels; the limit is 0\.002 megapixels"
        ):
            load_image(large)


def test_the_pixel_limit_can_be_lowered(portrait_jpeg):
    with pytest.raises(InvalidImage, match=r"512 x 512 pixels; the limit is 0\.1 megapixels"):
        load_image(portrait_jpeg, max_pixels=100_000)


def test_missing_file(tmp_path):
    with pytest.raises(InvalidImage, match="Cannot read"):
        load_image(tmp_path / "nowhere.jpg")


def test_other_argument_types_are_a_programming_error():
    with pytest.raises(TypeError, match="bytes, a path or a binary file"):
        load_image(12345)
    with pytest.raises(TypeError, match="bytes, a path or a binary file"):
        load_image(io.StringIO("text"))


# Nothing written -------------------------------------------------------------------------------


def test_nothing_is_written_to_disk(tmp_path, monkeypatch, astronaut_rgb, portrait_jpeg):
    working = tmp_path / "cwd"
    temporary = tmp_path / "tmp"
    working.mkdir()
    temporary.mkdir()
    monkeypatch.chdir(working)
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    real_open = builtins.open
    writes: list[str] = []

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            writes.append(f"{file} ({mode})")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    good = [
        portrait_jpeg,
        encode(Image.fromarray(astronaut_rgb), "PNG"),
        encode(Image.fromarray(astronaut_rgb), "WEBP"),
        encode(Image.new("CMYK", (8, 8)), "JPEG"),
    ]
    bad = [data for data, _ in BAD_FILES.values()] + [truncated(portrait_jpeg), png_header_only(30000, 30000)]

    for data in good:
        load_image(data)
    for data in bad:
        with pytest.raises(InvalidImage):
            load_image(data)

    assert writes == []
    assert list(working.iterdir()) == []
    assert list(temporary.iterdir()) == []


# Memory -----------------------------------------------------------------------------------------

PEAK_MEMORY = """
import sys
from pathlib import Path
from emotion.image import load_image

def status(field):  # kB
    lines = Path("/proc/self/status").read_text().splitlines()
    return int(next(line.split()[1] for line in lines if line.startswith(field + ":")))

small, large = (Path(name).read_bytes() for name in sys.argv[1:3])
load_image(small)  # the format's plugin and the interpreter's first allocations
Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
before = status("VmRSS")
rgb = load_image(large)
print((status("VmHWM") - before) * 1024 / (rgb.shape[0] * rgb.shape[1]))
"""


def image_in_mode(mode: str, width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(0)
    if mode == "F":
        return Image.fromarray(rng.random((height, width), dtype=np.float32) * 1000 - 10)
    if mode == "I":
        return Image.fromarray(rng.integers(-(1 << 20), 1 << 20, (height, width), dtype=np.int32))
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


@pytest.mark.parametrize(
    ("mode", "format"),
    [
        ("RGB", "JPEG"),
        ("L", "PNG"),
        ("1", "PNG"),
        ("P", "GIF"),
        ("RGBA", "PNG"),
        ("LA", "PNG"),
        ("CMYK", "TIFF"),
        ("I;16", "PNG"),
        ("I", "TIFF"),
        ("F", "TIFF"),
    ],
)
def test_memory_per_pixel_is_bounded_whatever_the_mode(tmp_path, mode, format):
    # A float TIFF used to take several float64 copies of itself: 37 bytes a pixel.
    small, large = tmp_path / "small", tmp_path / "large"
    image_in_mode(mode, 16, 16).save(small, format=format)
    image_in_mode(mode, 2500, 2000).save(
        large, format=format, **({"compress_level": 1} if format == "PNG" else {})
    )
    measured = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY, str(small), str(large)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert float(measured.stdout) <= PEAK_BYTES_PER_PIXEL


def test_a_jpeg_with_more_scans_than_an_encoder_writes_is_refused_before_decoding(monkeypatch):
    decoded = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda image: decoded.append(image.size) or load(image))
    limit = image_module.MAX_JPEG_SCANS
    too_many = hostile.many_scans_jpeg(64, 48, limit - 4)  # a grey progressive JPEG has 6 scans
    assert too_many.count(b"\xff\xda") == limit + 1
    with pytest.raises(InvalidImage, match=rf"more than {limit} scans"):
        load_image(too_many)
    assert decoded == []
    at_the_limit = hostile.many_scans_jpeg(64, 48, limit - 5)
    assert load_image(at_the_limit).shape == (48, 64, 3)
    # Markers that start nothing count too: a flood of them is no way round the count.
    comment = b"\xff\xda" * 10  # so that the markers are read
    with_comment = (
        at_the_limit[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + at_the_limit[2:]
    )
    flood = b"\xff\x01" * image_module.MAX_JPEG_MARKERS
    with pytest.raises(InvalidImage, match="damaged"):
        load_image(with_comment[:-2] + flood + with_comment[-2:])


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
def test_progressive_jpegs_as_encoders_write_them_load(mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    photo = encode(rgb.convert(mode), "JPEG", progressive=True, exif=rgb.getexif())
    assert load_image(photo).shape == (48, 64, 3)
    # Scan markers' bytes inside a metadata segment are not scans.
    comment = b"\xff\xda" * 4000
    with_comment = photo[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + photo[2:]
    assert load_image(with_comment).shape == (48, 64, 3)
