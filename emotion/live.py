"""Live analysis of a frame stream: track and classify (emotion.tracking) -> record
(emotion.session) -> draw (emotion.draw).

`LiveAnalyzer.process(bgr)` handles one webcam (or video) frame at a time, and
`LiveAnalyzer.process_frame(frame)` one decoded video frame in its own format (yuv420p from
WebRTC). streamlit-webrtc calls `process_frame` from its own thread while the page calls
`snapshot()`: the session statistics sit behind a lock and `snapshot` returns copies.
`LiveRecorder` hands the tracked faces of each frame to the detection log (emotion.history)
while the page has the log switched on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import av
import cv2
import numpy as np
from av.video.reformatter import ColorRange

from emotion.draw import I420Canvas, annotate_frame, draw_live_overlay
from emotion.engagement import DEFAULT_PRESET, get_preset
from emotion.events import EventSource, FrameFaces
from emotion.results import Face
from emotion.session import LOG_INTERVAL_S, LOG_MAX_ROWS, SessionSnapshot, SessionStats
from emotion.tracking import Classifier, Detector, FaceTracker, TrackingSettings

if TYPE_CHECKING:  # the log's DuckDB and Arrow are loaded only where a log is kept
    from emotion.history import DetectionLog

# Video-range luma (16-235) -> full-range grey (0-255): the picture's grey (its BT.601 luma), which
# the face finders and the classifier take.
VIDEO_TO_FULL_RANGE = np.clip(np.rint((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class LiveSettings(TrackingSettings):
    """How a LiveAnalyzer detects, tracks and smooths faces (see TrackingSettings), keeps the
    session's statistics and draws."""

    engagement_preset: str = DEFAULT_PRESET  # a key of emotion.engagement.PRESETS
    log_interval_s: float = LOG_INTERVAL_S
    log_max_rows: int = LOG_MAX_ROWS
    show_fps: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.log_max_rows < 1:
            raise ValueError(f"log_max_rows must be at least 1, got {self.log_max_rows}")
        get_preset(self.engagement_preset)  # an unknown preset fails here, not mid-stream


class LiveAnalyzer:
    """Frame-by-frame face tracking, emotion smoothing, session statistics and overlay.

    `process` may be called from one thread (the webcam's) while any other thread calls
    `snapshot`, `log_csv` or `reset`.
    """

    def __init__(
        self,
        classifier: Classifier,
        settings: LiveSettings = LiveSettings(),
        detector: Detector | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.tracker = FaceTracker(classifier, settings, detector)
        self.stats = SessionStats(settings.engagement_preset, settings.log_max_rows, settings.log_interval_s)
        self._clock = clock
        self._process_lock = threading.Lock()  # the tracks belong to one process() at a time
        self._start = clock()

    def reset(self) -> None:
        """Forget the tracks and the statistics: a new session."""
        with self._process_lock:
            self.tracker.reset()
            self.stats.reset()
            self._start = self._clock()

    def snapshot(self) -> SessionSnapshot:
        return self.stats.snapshot()

    def log_csv(self) -> str:
        return self.stats.to_csv()

    def process(
        self, bgr: np.ndarray, time_s: float | None = None, *, draw: bool = True
    ) -> tuple[np.ndarray, list[Face]]:
        """One BGR uint8 (H, W, 3) frame -> (annotated copy, faces in view ordered by id).

        time_s: the frame's time in the session; None means the clock's time since the start.
        draw: False returns the frame itself, not annotated (when only the faces are wanted).
        """
        started = time.perf_counter()
        bgr = _check_frame(bgr)
        faces, time_s = self._track(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), time_s)
        annotated = annotate_frame(bgr, faces, self._shown_fps()) if draw else bgr
        self.stats.record(time_s, faces, time.perf_counter() - started)
        return annotated, faces

    def process_frame(
        self, frame: av.VideoFrame, time_s: float | None = None
    ) -> tuple[av.VideoFrame, list[Face]]:
        """One decoded video frame -> (a new annotated frame, faces in view ordered by id).

        A yuv420p frame (what WebRTC's decoders give) is analysed and drawn on in its own format:
        its luma plane is the grey picture the tracker takes, and the overlay goes onto a copy of
        its planes, so the frame is never converted to BGR and back, and the encoder that sends
        it on needs no conversion either. Frames in other formats go through `process`.
        """
        if frame.format.name != "yuv420p":
            annotated, faces = self.process(frame.to_ndarray(format="bgr24"), time_s)
            shown = av.VideoFrame.from_ndarray(annotated, format="bgr24")
        else:
            started = time.perf_counter()
            shown = av.VideoFrame(frame.width, frame.height, "yuv420p")
            planes = [_plane_array(plane) for plane in shown.planes]  # luma (H, W), chroma (H/2, W/2)
            for source, copy in zip(frame.planes, planes, strict=True):
                copy[:] = _plane_array(source)
            full_range = frame.color_range == ColorRange.JPEG
            gray = planes[0] if full_range else cv2.LUT(planes[0], VIDEO_TO_FULL_RANGE)
            faces, time_s = self._track(gray, time_s)
            draw_live_overlay(I420Canvas(*planes, full_range=full_range), faces, self._shown_fps())
            shown.color_range = frame.color_range
            self.stats.record(time_s, faces, time.perf_counter() - started)
        shown.pts = frame.pts
        if frame.time_base is not None:
            shown.time_base = frame.time_base
        return shown, faces

    def _track(self, gray: np.ndarray, time_s: float | None) -> tuple[list[Face], float]:
        """The faces of the next grey frame, and the frame's time in the session."""
        with self._process_lock:
            if time_s is None:
                time_s = self._clock() - self._start
            return self.tracker.update(gray), time_s

    def _shown_fps(self) -> float | None:
        return self.stats.fps() if self.settings.show_fps else None


def _plane_array(plane: av.video.plane.VideoPlane) -> np.ndarray:
    """A video plane's pixels as a uint8 (height, width) view of its buffer (rows may be padded)."""
    rows = np.frombuffer(plane, np.uint8, count=plane.line_size * plane.height)
    return rows.reshape(plane.height, plane.line_size)[:, : plane.width]


def _check_frame(bgr: np.ndarray) -> np.ndarray:
    bgr = np.asarray(bgr)
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ValueError(f"A frame must be BGR uint8 (H, W, 3), got {bgr.dtype} {bgr.shape}")
    if min(bgr.shape[:2]) < 1:
        raise ValueError("A frame must not be empty")
    return bgr


class LiveRecorder:
    """Hands one live source's frames to a detection log while its `log` is set.

    The page sets `log` (None: the switch is off) and `source` on every run; the webcam thread
    calls `record` for every frame, which reads both once, so switching the log off stops the
    writing from the next frame on.
    """

    def __init__(self) -> None:
        self.log: DetectionLog | None = None
        self.source: EventSource | None = None
        self._frame_index = 0
        self._started = time.monotonic()

    def restart(self, source: EventSource) -> None:
        """A new session of the source: frames count from 0 again."""
        self.source = source
        self._frame_index = 0
        self._started = time.monotonic()

    def record(self, faces: Sequence[Face], width: int, height: int) -> None:
        """One frame's tracked faces (each with its id) in a width x height frame."""
        index = self._frame_index
        self._frame_index += 1
        log, source = self.log, self.source
        if log is None or source is None or not faces:
            return
        frame = FrameFaces(index, time.monotonic() - self._started, time.time(), width, height, faces)
        log.submit(source, [frame])
