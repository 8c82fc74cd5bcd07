"""Emotions in a video file: decode -> (downscale) -> track and classify -> draw -> H.264 MP4.

Frames go through the same `LiveAnalyzer` as the webcam, so a video and the live view track,
smooth and draw faces the same way, searching whole frames for faces on every
`LiveSettings.detect_every`-th frame and following them in between. Encoding runs in a second
thread while the next frame is analysed (x264 and OpenCV release the GIL), which on 2 cores
makes the whole about a third faster. Everything happens in memory: the input is read from a
path or from bytes (PyAV opens a BytesIO) and the annotated MP4 comes back as bytes, so no
file is written at all. The output keeps the input's frame rate up to MAX_ANALYSED_FPS; a
faster video (slow motion, say) has every step-th frame analysed, so that the output plays at
the input's speed with at most MAX_ANALYSED_FPS frames a second. It has no audio, and variable
frame-rate input comes out at its average rate.

Limits (the maximum file size is the page's upload limit). The work a video costs is bounded by
the frames it has, not by the duration its container declares, which a file can make up:
- MAX_ANALYSED_FRAMES (two minutes at MAX_ANALYSED_FPS) and MAX_DECODED_FRAMES: a video that
  declares more, or longer than MAX_DURATION_S, is refused before any frame is decoded; one
  that declares nothing, or less than it has, is stopped when it gets there. Processing runs
  several times faster than real time (the README's Speed table, from scripts/benchmark.py),
  so two minutes take well under a minute.
- Videos larger than PROCESSING_MAX_SIDE (a 4K video, say) are downscaled to it for processing
  and output: the detector works on a downscaled image anyway and an annotated 4K MP4 would only
  be slower to encode and to send. Videos above MAX_INPUT_PIXELS (beyond 4K) are refused:
  decoding alone would take too long. The limit holds for every frame, not only the size the
  container gives: a stream may change its picture size later (a new JPEG in MJPEG, a new
  sequence header in H.264). FFmpeg's decoder is told the limit (its max_pixels), so that it
  allocates no larger frame, in the probe as while decoding, and each decoded frame is checked
  again before it is converted.
"""

from __future__ import annotations

import io
import logging
import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO, NamedTuple

import av
import cv2
import numpy as np

from emotion.engagement import engagement_score
from emotion.live import LiveAnalyzer, LiveSettings
from emotion.results import Face, FaceRow, rows_to_csv
from emotion.tracking import Classifier

logger = logging.getLogger(__name__)

MAX_DURATION_S = 120.0  # two minutes
MAX_ANALYSED_FPS = 30  # faster videos have every step-th frame analysed, down to this rate at most
MAX_ANALYSED_FRAMES = round(MAX_DURATION_S * MAX_ANALYSED_FPS)  # 3,600: the frames one video may cost
MAX_DECODED_FRAMES = 4 * MAX_ANALYSED_FRAMES  # skipped frames are still decoded: 2 minutes at 120 fps
MAX_INPUT_PIXELS = 4096 * 2160  # DCI 4K; larger videos are refused before decoding
PROCESSING_MAX_SIDE = 1280  # longer side; larger videos are downscaled to it (720p for 4K)
TRUNCATION_TOLERANCE_FRAMES = 2  # containers may count a frame or two more than they deliver
OUTPUT_CODEC = "libx264"
OUTPUT_OPTIONS = {"crf": "23", "preset": "veryfast"}  # near-transparent, fast to encode
# How the annotated video's YUV is to be read, written into the H.264 stream for players: limited
# range ("tv", Y from 16 to 235) and the BT.601 matrix, which is how OpenCV converts each frame, and
# sRGB's primaries (BT.709's) and transfer curve, which the frames' RGB values are in.
OUTPUT_COLOUR = {"color_range": 1, "colorspace": 6, "color_primaries": 1, "color_trc": 13}
DEFAULT_FPS = Fraction(30)  # when a container gives no frame rate at all
ENCODE_QUEUE_FRAMES = 8  # annotated frames waiting for the encoder thread, at most
# The only demuxers FFmpeg may use (its format_whitelist): the containers of the videos the app
# takes ("mov" is also MP4 and M4V, "matroska" also WebM), and the still photos it takes, so that
# a photo is told apart from a damaged video. Any other demuxer is refused before it reads a byte
# past the probe: some open further files or URLs that the upload names (concat, HLS, image2).
VIDEO_FORMATS = ("mov", "avi", "matroska")
STILL_IMAGE_FORMATS = ("jpeg_pipe", "png_pipe", "webp_pipe", "gif_pipe", "bmp_pipe", "tiff_pipe")
SUPPORTED = "MP4, MOV, M4V, AVI, WebM, MKV"  # the video containers, as a person reads them

ProgressCallback = Callable[[int, int], None]  # (frames done, frames in total)


class InvalidVideo(ValueError):
    """The file is not a video we can analyse: empty, damaged, truncated, too long or too large."""


class EngagementPoint(NamedTuple):
    time_s: float
    engagement: float  # mean over the faces in that frame


@dataclass(frozen=True)
class VideoResult:
    video: bytes  # the annotated H.264 MP4 (yuv420p), ready for a browser
    frames: int  # analysed, and in the annotated video
    fps: float  # of the annotated video
    duration_s: float
    source_fps: float  # fps / source_fps of the input's frames were analysed
    width: int  # of the annotated video
    height: int
    source_width: int
    source_height: int
    rows: tuple[FaceRow, ...]  # one per (frame, face); boxes in the annotated video's pixels
    frames_with_faces: int
    distribution: Mapping[str, float]  # share of (frame, face) rows per emotion; all 0 without faces
    dominant_emotion: str | None  # None when no face was found
    engagement: tuple[EngagementPoint, ...]  # one per frame with faces
    mean_engagement: float | None

    @property
    def downscaled(self) -> bool:
        return (self.width, self.height) != (self.source_width, self.source_height)

    @property
    def sampled(self) -> bool:
        return self.fps != self.source_fps

    def to_csv(self) -> str:
        """The rows as CSV text (see emotion.results)."""
        return rows_to_csv(self.rows)


class VideoInfo(NamedTuple):
    width: int
    height: int
    fps: Fraction
    frames: int  # as the container declares it (0: unknown), or estimated from the duration
    duration_s: float | None  # None: the container does not say
    step: int  # every step-th frame is analysed: fps / step is at most MAX_ANALYSED_FPS

    @property
    def analysed_fps(self) -> Fraction:
        return self.fps / self.step

    @property
    def analysed_frames(self) -> int:
        """Every step-th of `frames`, the first included: the frames analysed (estimated as `frames` is)."""
        return -(-self.frames // self.step)


def output_size(width: int, height: int, max_side: int = PROCESSING_MAX_SIDE) -> tuple[int, int]:
    """(width, height) scaled down to max_side if larger, rounded down to even (yuv420p needs it)."""
    scale = min(1.0, max_side / max(width, height))
    width, height = round(width * scale), round(height * scale)
    return max(2, width - width % 2), max(2, height - height % 2)


def process_video(
    source: str | Path | bytes,
    classifier: Classifier,
    *,
    settings: LiveSettings | None = None,
    progress: ProgressCallback | None = None,
) -> VideoResult:
    """Annotate a video's frames (every step-th one of a fast video) with its faces' emotions.

    source: a path or the file's bytes. settings: how faces are searched for, tracked and
    smoothed; by default the webcam's (the live detector preset, a search of the whole frame
    on every LiveSettings.detect_every-th analysed frame); never an FPS banner. progress(done,
    total) is called after each analysed frame; total is an estimate where the container does
    not say.
    Raises InvalidVideo with a message for people.
    """
    settings = replace(settings or LiveSettings(), show_fps=False)
    with _open(source) as container:
        stream = container.streams.video[0]
        info = _check(container, stream)
        analyzer = LiveAnalyzer(classifier, settings)
        buffer = io.BytesIO()
        rows: list[FaceRow] = []
        engagement: list[EngagementPoint] = []
        with av.open(buffer, "w", format="mp4") as output, ThreadPoolExecutor(1) as encoder:
            out_stream = None
            encoding: deque[Future] = deque()  # in frame order: one worker encodes them in turn
            for index, time_s, annotated, faces in _analysed_frames(
                container, stream, info, analyzer, progress
            ):
                if out_stream is None:  # a rotated video is only known to be portrait now
                    out_stream = _add_output_stream(
                        output, info.analysed_fps, annotated.shape[1], annotated.shape[0]
                    )
                rows.extend(FaceRow(index, time_s, face) for face in faces)
                if faces:
                    probabilities = np.stack([face.probabilities for face in faces])  # (N, 7)
                    mean = float(np.mean(engagement_score(probabilities, settings.engagement_preset)))
                    engagement.append(EngagementPoint(time_s, mean))
                encoding.append(encoder.submit(_encode, output, out_stream, annotated))
                if len(encoding) > ENCODE_QUEUE_FRAMES:
                    encoding.popleft().result()  # also raises what the encoder raised
            while encoding:
                encoding.popleft().result()
            _encode(output, out_stream, None)  # flush the encoder
    frames = index + 1
    snapshot = analyzer.snapshot()
    logger.info(
        "Annotated %d frames (%dx%d), %d face rows", frames, out_stream.width, out_stream.height, len(rows)
    )
    return VideoResult(
        video=buffer.getvalue(),
        frames=frames,
        fps=float(info.analysed_fps),
        duration_s=frames / float(info.analysed_fps),
        source_fps=float(info.fps),
        width=out_stream.width,
        height=out_stream.height,
        source_width=info.width,
        source_height=info.height,
        rows=tuple(rows),
        frames_with_faces=len(engagement),
        distribution=MappingProxyType(dict(snapshot.distribution)),
        dominant_emotion=snapshot.dominant_emotion,
        engagement=tuple(engagement),
        mean_engagement=snapshot.mean_engagement,
    )


class TrackedFrame(NamedTuple):
    index: int  # 0-based, among the analysed frames (every step-th one of a fast video)
    time_s: float  # in the video
    width: int  # of the analysed frame (downscaled beyond PROCESSING_MAX_SIDE)
    height: int
    faces: list[Face]  # with their track ids


def track_video(
    source: str | Path | bytes,
    classifier: Classifier,
    *,
    settings: LiveSettings | None = None,
    limit_length: bool = True,
) -> Iterator[TrackedFrame]:
    """The tracked faces of the frames process_video analyses, found the same way but neither
    drawn nor encoded.

    limit_length: refuse videos longer than process_video takes; False analyses any length (an
    archive's recordings). A damaged or truncated file raises InvalidVideo, possibly after some
    frames.
    """
    settings = replace(settings or LiveSettings(), show_fps=False)
    with _open(source) as container:
        stream = container.streams.video[0]
        info = _check(container, stream, limit_length=limit_length)
        analyzer = LiveAnalyzer(classifier, settings)
        for index, time_s, frame, faces in _analysed_frames(
            container, stream, info, analyzer, limit_length=limit_length, draw=False
        ):
            yield TrackedFrame(index, time_s, frame.shape[1], frame.shape[0], faces)


def probe_video(source: str | Path | bytes | BinaryIO) -> VideoInfo:
    """Size, frame rate, frame count and duration, after the checks process_video makes first.

    source: a path, the file's bytes, or an open binary file (read from its start, not into memory)."""
    with _open(source) as container:
        return _check(container, container.streams.video[0])


def _analysed_frames(
    container,
    stream,
    info: VideoInfo,
    analyzer: LiveAnalyzer,
    progress: ProgressCallback | None = None,
    *,
    limit_length: bool = True,
    draw: bool = True,
) -> Iterator[tuple[int, float, np.ndarray, list[Face]]]:
    """(index, time_s, frame, faces) for every step-th frame, upright and downscaled: index
    counts the analysed frames, time_s is the frame's time in the video, and the frame is
    annotated unless draw is False. progress(done, total) follows each analysed frame."""
    width, height = output_size(info.width, info.height)
    decoded = frames = 0
    total = info.analysed_frames
    for frame in _decode(container, stream):
        if frame.width * frame.height > MAX_INPUT_PIXELS:  # the picture size may change after the first
            raise InvalidVideo(_too_large_message(frame.width, frame.height, f"Frame {decoded + 1}"))
        index, decoded = decoded, decoded + 1
        time_s = index / float(info.fps)
        if limit_length and (time_s > MAX_DURATION_S or decoded > MAX_DECODED_FRAMES):
            raise InvalidVideo(_too_long_message(None))
        if index % info.step:
            continue
        if limit_length and frames == MAX_ANALYSED_FRAMES:
            raise InvalidVideo(_too_long_message(None))
        shown, faces = analyzer.process(_to_bgr(frame, width, height), time_s=time_s, draw=draw)
        yield frames, time_s, shown, faces
        frames += 1
        if progress is not None:
            total = max(total, frames)
            progress(frames, total)
    if frames == 0:
        raise InvalidVideo("The video has no frames that can be decoded")
    if info.frames and decoded < info.frames - TRUNCATION_TOLERANCE_FRAMES:
        raise InvalidVideo(
            f"The video stops after {decoded} of its {info.frames} frames: the file looks truncated"
        )


def _open(source: str | Path | bytes | BinaryIO):
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise InvalidVideo("The file is empty")
        file = io.BytesIO(source)
        name = "The file"
    elif not isinstance(source, str | Path):  # an open binary file, read from its start
        if source.seek(0, io.SEEK_END) == 0:
            raise InvalidVideo("The file is empty")
        source.seek(0)
        file = source
        name = "The file"
    else:
        path = Path(source)
        if not path.is_file():
            raise InvalidVideo(f"No such file: {path}")
        if path.stat().st_size == 0:
            raise InvalidVideo(f"{path.name} is empty")
        file = f"file:{path}"  # this file, whatever its name looks like (a "concat:" URL, say)
        name = path.name
    options = {
        "format_whitelist": ",".join(VIDEO_FORMATS + STILL_IMAGE_FORMATS),
        "protocol_whitelist": "file",
        # Also given to the decoders the probe (avformat_find_stream_info) runs on the first frames.
        "max_pixels": str(MAX_INPUT_PIXELS),
    }
    try:
        container = av.open(file, "r", options=options)
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        raise InvalidVideo(f"{name} is not a video file we can read ({SUPPORTED})") from error
    if container.format.name in STILL_IMAGE_FORMATS:
        container.close()
        raise InvalidVideo(f"{name} is a still image, not a video: analyse it as a photo")
    if not container.streams.video:
        container.close()
        raise InvalidVideo(f"{name} has no video stream")
    codec_context = container.streams.video[0].codec_context
    if codec_context is not None:  # None: an unknown codec, which _check refuses
        codec_context.options = {"max_pixels": str(MAX_INPUT_PIXELS)}  # read when it opens
    return container


def _check(container, stream, *, limit_length: bool = True) -> VideoInfo:
    if stream.codec_context is None:  # FFmpeg does not know the codec the file names
        raise InvalidVideo("The video is in a format (codec) we cannot decode")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width < 1 or height < 1:
        # Also what FFmpeg leaves of a stream whose first frames its probe refused over max_pixels.
        raise InvalidVideo(
            "The video has no picture size that can be read: the file is damaged, or its frames are "
            f"larger than 4K ({MAX_INPUT_PIXELS / 1e6:.1f} megapixels)"
        )
    if width * height > MAX_INPUT_PIXELS:
        raise InvalidVideo(_too_large_message(width, height))
    fps = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not fps or fps <= 0:
        logger.warning("No frame rate in the video; assuming %s fps", DEFAULT_FPS)
        fps = DEFAULT_FPS
    duration_s = None
    if stream.duration is not None and stream.time_base is not None:
        duration_s = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration_s = container.duration / av.time_base
    if limit_length and duration_s is not None and duration_s > MAX_DURATION_S:
        raise InvalidVideo(_too_long_message(f"{duration_s:.0f} s"))
    fps = Fraction(fps)
    frames = int(stream.frames or (round(duration_s * float(fps)) if duration_s else 0))
    step = max(1, math.ceil(fps / MAX_ANALYSED_FPS))
    info = VideoInfo(width, height, fps, frames, duration_s, step)
    if limit_length and (frames > MAX_DECODED_FRAMES or info.analysed_frames > MAX_ANALYSED_FRAMES):
        raise InvalidVideo(_too_long_message(f"{frames:,} frames at {float(fps):.4g} fps"))
    return info


def _too_large_message(width: int, height: int, where: str = "The video") -> str:
    return f"{where} is {width}x{height}: too large, at most 4K ({MAX_INPUT_PIXELS / 1e6:.1f} megapixels)"


def _too_long_message(length: str | None) -> str:
    length = f" ({length})" if length is not None else ""
    return (
        f"The video is too long{length}: at most {MAX_DURATION_S:.0f} s at {MAX_ANALYSED_FPS} frames "
        "a second can be analysed"
    )


def _decode(container, stream):
    try:
        yield from container.decode(stream)
    except av.error.FFmpegError as error:  # also a frame over max_pixels, which FFmpeg does not tell apart
        raise InvalidVideo(
            f"The video is damaged, or has a frame larger than 4K, and cannot be decoded ({error})"
        ) from error


def _to_bgr(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """The frame upright, at (width, height) before any rotation, as BGR uint8 (H, W, 3)."""
    if (frame.width, frame.height) != (width, height):
        frame = frame.reformat(width=width, height=height, interpolation="AREA")
    bgr = frame.to_ndarray(format="bgr24")
    quarter_turns = round((frame.rotation or 0) / 90) % 4  # counterclockwise, as a player shows it
    return np.ascontiguousarray(np.rot90(bgr, quarter_turns)) if quarter_turns else bgr


def _encode(output, stream, bgr: np.ndarray | None) -> None:
    """Encode one BGR frame (None: flush the encoder) and write its packets."""
    frame = None
    if bgr is not None:
        yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)  # (H * 3 / 2, W): limited range, BT.601
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.color_range, frame.colorspace = OUTPUT_COLOUR["color_range"], OUTPUT_COLOUR["colorspace"]
    for packet in stream.encode(frame):
        output.mux(packet)


def _add_output_stream(output, fps: Fraction, width: int, height: int):
    stream = output.add_stream(OUTPUT_CODEC, rate=fps, options=dict(OUTPUT_OPTIONS))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for name, value in OUTPUT_COLOUR.items():
        setattr(stream.codec_context, name, value)
    return stream
