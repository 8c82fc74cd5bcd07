"""Coverage-guided fuzzing of what reads untrusted uploads: `load_image`, the video probe and
the first frames' decoding.

    python scripts/fuzz.py image --seconds 600
    python scripts/fuzz.py video --seconds 600
    python scripts/fuzz.py all --seconds 600      # each target in turn, in a process of its own

Each target gets bytes from atheris (libFuzzer), starting from small valid files of every
format the app takes, made here in memory, and hostile ones (scripts/hostile.py: videos whose
frames grow past 4K after a small first one, JPEGs with more scans than an encoder writes). The
only acceptable outcomes are a result and the target's own exception (`InvalidImage`,
`InvalidVideo`); anything else, or an input that takes longer than --input-timeout seconds,
stops the run, is saved under --artifacts (crash-*, timeout-*) and makes the exit status
non-zero. A saved input replays with `python scripts/fuzz.py TARGET --replay FILE`. Needs
`pip install -r requirements-dev.txt` (atheris). Python code (Pillow's plugins, the project) is
instrumented for coverage; FFmpeg, inside PyAV, is fuzzed without coverage feedback.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import hostile  # scripts/hostile.py
import numpy as np

REPO = Path(__file__).resolve().parent.parent

TARGETS = ("image", "video")
MAX_INPUT_BYTES = 1 << 20  # 1 MiB: large enough for every seed, small enough for many runs a second
# load_image takes at most 650 MB (50 megapixels x PEAK_BYTES_PER_PIXEL, whatever the mode), the
# fuzzer and the interpreter a few hundred more: an input over this breaks that bound.
RSS_LIMIT_MB = 1024
DECODED_FRAMES = 10  # of a video the probe accepts, decoded and tracked (a whole one may take minutes)


def image_target() -> Callable[[bytes], None]:
    import atheris

    with atheris.instrument_imports(include=["PIL", "emotion"]):
        from PIL import Image

        Image.init()  # imports every format plugin now, so that they are instrumented too
        from emotion.image import InvalidImage, load_image

    def run(data: bytes) -> None:
        with contextlib.suppress(InvalidImage):
            load_image(data)

    return run


def video_target() -> Callable[[bytes], None]:
    """probe_video, run in a folder that holds a readable video (`secret.avi`) for hostile inputs
    to name: whatever it accepts must be a container the app takes, as FFmpeg's own unrestricted
    probe detects it, so no demuxer outside the allow-list ever reads the upload (or that file).
    Its first DECODED_FRAMES frames are then decoded and tracked as a video job would (with a
    classifier that reads every face as neutral): a frame that grows past the limit must be
    refused with InvalidVideo, within the memory bound."""
    import itertools

    import atheris
    import av

    with atheris.instrument_imports(include=["emotion"]):
        from emotion.video import VIDEO_FORMATS, InvalidVideo, probe_video, track_video

    class Neutral:
        def predict_proba(self, faces: np.ndarray) -> np.ndarray:
            probabilities = np.zeros((len(faces), 7), dtype=np.float32)
            probabilities[:, -1] = 1.0
            return probabilities

    folder = Path(tempfile.mkdtemp(prefix="fuzz-video-folder-"))
    (folder / "secret.avi").write_bytes(three_frame_clip("avi", "mjpeg"))
    os.chdir(folder)

    def run(data: bytes) -> None:
        try:
            probe_video(data)
        except InvalidVideo:
            return
        with av.open(io.BytesIO(data)) as container:  # accepted: what FFmpeg alone takes it for
            detected = container.format.name.split(",")
        if not set(detected) & set(VIDEO_FORMATS):
            raise AssertionError(f"probe_video accepted a {container.format.name} file")
        with contextlib.suppress(InvalidVideo):
            for _ in itertools.islice(track_video(data, Neutral()), DECODED_FRAMES):
                pass

    return run


def image_seeds() -> Iterator[bytes]:
    """Small files of every format and colour mode (bit depth, float, alpha) load_image reads."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    variants = (
        rgb,
        rgb.convert("L"),
        rgb.convert("P"),
        rgb.convert("RGBA"),
        rgb.convert("CMYK"),
        rgb.convert("1"),
        rgb.convert("LA"),
        rgb.convert("PA"),
        rgb.convert("YCbCr"),
        rgb.convert("LAB"),
        Image.fromarray(rng.integers(0, 65536, (12, 16), dtype=np.uint16)),  # I;16
        Image.fromarray(rng.integers(-(1 << 31), 1 << 31, (12, 16), dtype=np.int32)),  # I
        Image.fromarray(rng.random((12, 16), dtype=np.float32)),  # F in [0, 1]
        Image.fromarray(np.array([[np.nan, np.inf], [-np.inf, 1e30]], dtype=np.float32)),  # F, unbounded
    )
    for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"):
        for image in variants:
            buffer = io.BytesIO()
            try:
                image.save(buffer, format=fmt)
            except (OSError, ValueError, KeyError):
                continue  # the format cannot store that mode
            yield buffer.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    for fmt in ("JPEG", "TIFF", "PNG", "WEBP"):
        buffer = io.BytesIO()
        rgb.save(buffer, format=fmt, exif=exif)
        yield buffer.getvalue()
    buffer = io.BytesIO()
    rgb.save(buffer, format="GIF", save_all=True, append_images=[rgb.rotate(90, expand=False)], duration=50)
    yield buffer.getvalue()
    yield hostile.many_scans_jpeg(64, 48, 100)  # 105 scans: refused before decoding
    yield hostile.many_scans_jpeg(64, 48, 40)  # 45: decoded


VIDEO_CODECS = (
    ("mp4", "libx264"),
    ("mov", "libx264"),
    ("mp4", "mpeg4"),
    ("avi", "mpeg4"),
    ("avi", "mjpeg"),
    ("matroska", "libx264"),
    ("webm", "libvpx"),
)
# Files that make FFmpeg read other files or URLs, naming the target's `secret.avi`: each must be
# refused (the concat demuxer and protocol, an HLS playlist, an image sequence, a tee, a subfile).
HOSTILE_VIDEOS = (
    b"ffconcat version 1.0\nfile secret.avi\n",
    b"ffconcat version 1.0\nfile concat:secret.avi|secret.avi\n",
    b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nsecret.avi\n#EXT-X-ENDLIST\n",
    b"#EXTM3U\n#EXTINF:10,\nfile:secret.avi\n",
    b"file 'secret.avi'\n",
    b"secret%03d.avi",
    b"subfile,,start,0,end,0,,:secret.avi",
)


def video_seeds() -> Iterator[bytes]:
    """Three-frame clips in the containers and codecs people upload, then the hostile files."""
    for container_format, codec in VIDEO_CODECS:
        clip = three_frame_clip(container_format, codec)
        if clip is not None:
            yield clip
    yield from HOSTILE_VIDEOS
    # Frames past 4K after a small first one: refused by FFmpeg's decoder (max_pixels) or the check after it.
    grown = [(24, 16), (4608, 2592), (4608, 2592)]
    yield hostile.growing_mjpeg_avi(grown)
    yield hostile.growing_h264(grown)
    yield hostile.growing_h264(grown, "matroska")


def three_frame_clip(container_format: str, codec: str) -> bytes | None:
    """A 24x16 clip of three grey frames; None where this build of FFmpeg lacks the encoder."""
    import av

    buffer = io.BytesIO()
    try:
        with av.open(buffer, "w", format=container_format) as output:
            stream = output.add_stream(codec, rate=10)
            stream.width, stream.height = 24, 16
            stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
            for index in range(3):
                frame = np.full((16, 24, 3), 40 * index, dtype=np.uint8)
                output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            output.mux(stream.encode())
    except (av.error.FFmpegError, ValueError):
        return None
    return buffer.getvalue()


def fuzz(target: str, seconds: int, input_timeout: int, artifacts: Path, corpus: Path | None) -> None:
    """Run one target under libFuzzer in this process; it exits the process when done."""
    import atheris

    warnings.simplefilter("ignore")  # Pillow warns about odd but readable files; not a failure
    logging.disable(logging.WARNING)  # load_image logs unreadable EXIF data; thousands of times here
    run = image_target() if target == "image" else video_target()
    seeds = image_seeds() if target == "image" else video_seeds()
    artifacts.mkdir(parents=True, exist_ok=True)
    corpus_dir = corpus or Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
    corpus_dir.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(seeds):
        (corpus_dir / f"seed-{index:03d}").write_bytes(seed)
    arguments = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        f"-timeout={input_timeout}",
        f"-max_len={MAX_INPUT_BYTES}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-artifact_prefix={artifacts}/{target}-",
        "-print_final_stats=1",
        # Keep the seeds whole: without coverage inside FFmpeg, every broken video looks the same
        # to libFuzzer, which would otherwise shrink the valid seeds to a few garbage bytes.
        "-reduce_inputs=0",
        str(corpus_dir),
    ]
    print(f"fuzzing {target} for {seconds} s from {len(list(corpus_dir.iterdir()))} inputs in {corpus_dir}")
    atheris.Setup(arguments, run)
    atheris.Fuzz()


def replay(target: str, path: Path) -> None:
    """Run one saved input through the target, raising what it raises."""
    run = image_target() if target == "image" else video_target()
    run(path.read_bytes())
    print(f"{path}: a result or the target's own exception")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=(*TARGETS, "all"))
    parser.add_argument("--seconds", type=int, default=600, help="fuzzing time per target")
    parser.add_argument("--input-timeout", type=int, default=60, help="seconds one input may take")
    parser.add_argument("--artifacts", type=Path, default=REPO / "fuzz-artifacts")
    parser.add_argument("--corpus", type=Path, help="keep the corpus here (default: a temporary folder)")
    parser.add_argument("--replay", type=Path, help="run this one input instead of fuzzing")
    args = parser.parse_args()
    if args.replay is not None:
        replay(args.target, args.replay)
        return 0
    if args.target != "all":
        fuzz(args.target, args.seconds, args.input_timeout, args.artifacts.resolve(), args.corpus)
        return 0  # not reached: libFuzzer exits the process
    failed = []
    for target in TARGETS:
        command = [sys.executable, __file__, target, "--seconds", str(args.seconds)]
        command += ["--input-timeout", str(args.input_timeout), "--artifacts", str(args.artifacts)]
        if args.corpus is not None:
            command += ["--corpus", str(args.corpus / target)]
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(target)
    print("failed: " + ", ".join(failed) if failed else f"no failure in {', '.join(TARGETS)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
