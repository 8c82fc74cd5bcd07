"""The statistics of a webcam (or video) session: what the page shows beside the live video.

`SessionStats.record` adds one processed frame (its faces, its time, how long it took) to running
aggregates (emotion counts, engagement over the session, per second for the last minute, frame
rate and latency) and to a bounded log of the faces seen; `snapshot` returns them as copies.
streamlit-webrtc records from its own thread while the page takes snapshots: everything sits
behind one lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from emotion.engagement import DEFAULT_PRESET, engagement_score, get_preset
from emotion.labels import EMOTIONS
from emotion.results import Face, FaceRow, rows_to_csv

LOG_MAX_ROWS = 18_000  # one face for one hour at 5 rows/s (~10 MB); older rows drop off first
LOG_INTERVAL_S = 0.2  # at most 5 log rows per face and second: webcam frames repeat themselves
TIMELINE_S = 60  # the per-second engagement timeline covers the last minute
ROLLING_WINDOWS_S = (30, 60)  # rolling engagement averages shown on the page
RATE_WINDOW_FRAMES = 30  # FPS and latency are measured over the last second or so of frames


class TimelinePoint(NamedTuple):
    time_s: int  # the start of a one-second bin, seconds since the session started
    engagement: float  # mean over the frames with faces in that second
    emotion: str  # the emotion shown most in that second


@dataclass(frozen=True)
class SessionSnapshot:
    """The session statistics at one moment: copies, safe to keep and read from any thread."""

    elapsed_s: float
    frames: int  # frames processed
    face_frames: int  # (frame, face) pairs seen
    fps: float  # frames processed per second, recently
    latency_ms: float  # median processing time per frame, recently
    faces: tuple[Face, ...]  # in view now, with their track ids
    emotion_counts: Mapping[str, int]  # (frame, face) pairs per shown emotion, whole session
    distribution: Mapping[str, float]  # emotion_counts as fractions (all 0 before any face)
    dominant_emotion: str | None  # the emotion shown most over the session; None before any face
    mean_engagement: float | None  # over the frames with faces, whole session
    rolling_engagement: Mapping[int, float | None]  # window seconds (30, 60) -> mean engagement
    timeline: tuple[TimelinePoint, ...]  # one point per second with faces, last minute
    log_rows: int  # rows in the log now (bounded by log_max_rows)

    @property
    def faces_in_view(self) -> int:
        return len(self.faces)


@dataclass
class _Second:
    """The frames with faces in one second of the session."""

    second: int  # seconds since the session started
    engagement_sum: float = 0.0  # of the frames' mean engagement
    frames: int = 0
    emotion_counts: np.ndarray = field(default_factory=lambda: np.zeros(len(EMOTIONS), dtype=np.int64))


class SessionStats:
    """Running aggregates and a bounded log of the faces seen in one session; thread-safe."""

    def __init__(
        self,
        preset: str = DEFAULT_PRESET,
        log_max_rows: int = LOG_MAX_ROWS,
        log_interval_s: float = LOG_INTERVAL_S,
    ):
        self._preset = get_preset(preset)
        self._log_max_rows = log_max_rows
        self._log_interval_s = log_interval_s
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._log: deque[FaceRow] = deque(maxlen=self._log_max_rows)
            self._last_logged: dict[int, float] = {}  # face id -> time of its last log row
            self._frames = 0
            self._face_frames = 0
            self._emotion_counts = np.zeros(len(EMOTIONS), dtype=np.int64)
            self._engagement_sum = 0.0
            self._engagement_frames = 0
            self._seconds: deque[_Second] = deque(maxlen=TIMELINE_S + 1)  # seconds with faces
            self._frame_times: deque[float] = deque(maxlen=RATE_WINDOW_FRAMES)  # perf_counter
            self._latencies_s: deque[float] = deque(maxlen=RATE_WINDOW_FRAMES)
            self._elapsed_s = 0.0
            self._faces: tuple[Face, ...] = ()

    def record(
        self, time_s: float, faces: Sequence[Face], latency_s: float, *, frame_clock_s: float | None = None
    ) -> None:
        """Add one processed frame: its time in the session, its tracked faces and how long it took.

        frame_clock_s: when the frame was analysed, on a steady clock, for the frame rate; None
        is now (perf_counter). Frames analysed elsewhere and recorded in batches give their own.
        """
        with self._lock:
            frame = self._frames
            self._frames += 1
            self._elapsed_s = max(self._elapsed_s, time_s)
            self._frame_times.append(time.perf_counter() if frame_clock_s is None else frame_clock_s)
            self._latencies_s.append(latency_s)
            self._faces = tuple(faces)
            live_ids = {face.id for face in faces}
            for face_id in [face_id for face_id in self._last_logged if face_id not in live_ids]:
                del self._last_logged[face_id]  # keeps the dict as small as the faces in view
            if not faces:
                return
            emotion_indices = [EMOTIONS.index(face.emotion) for face in faces]
            np.add.at(self._emotion_counts, emotion_indices, 1)
            self._face_frames += len(faces)
            probabilities = np.stack([face.probabilities for face in faces])  # (N, 7)
            frame_engagement = float(np.mean(engagement_score(probabilities, self._preset)))
            self._engagement_sum += frame_engagement
            self._engagement_frames += 1
            second = int(time_s)
            if not self._seconds or self._seconds[-1].second != second:
                self._seconds.append(_Second(second))
            this_second = self._seconds[-1]
            this_second.engagement_sum += frame_engagement
            this_second.frames += 1
            np.add.at(this_second.emotion_counts, emotion_indices, 1)
            for face in faces:
                last = self._last_logged.get(face.id)
                if last is None or time_s - last >= self._log_interval_s or time_s < last:
                    self._last_logged[face.id] = time_s
                    self._log.append(FaceRow(frame, time_s, face))

    def snapshot(self) -> SessionSnapshot:
        with self._lock:
            counts = self._emotion_counts.copy()
            total = int(counts.sum())
            now_second = int(self._elapsed_s)
            rolling = {}
            for window_s in ROLLING_WINDOWS_S:
                recent = [second for second in self._seconds if second.second > now_second - window_s]
                frames = sum(second.frames for second in recent)
                rolling[window_s] = (
                    sum(second.engagement_sum for second in recent) / frames if frames else None
                )
            timeline = tuple(
                TimelinePoint(
                    second.second,
                    second.engagement_sum / second.frames,
                    EMOTIONS[int(np.argmax(second.emotion_counts))],
                )
                for second in self._seconds
                if second.second > now_second - TIMELINE_S
            )
            return SessionSnapshot(
                elapsed_s=self._elapsed_s,
                frames=self._frames,
                face_frames=self._face_frames,
                fps=self._fps(),
                latency_ms=1000.0 * float(np.median(self._latencies_s)) if self._latencies_s else 0.0,
                faces=tuple(face._replace(probabilities=face.probabilities.copy()) for face in self._faces),
                emotion_counts=MappingProxyType(dict(zip(EMOTIONS, counts.tolist(), strict=True))),
                distribution=MappingProxyType(
                    {
                        emotion: (count / total if total else 0.0)
                        for emotion, count in zip(EMOTIONS, counts, strict=True)
                    }
                ),
                dominant_emotion=EMOTIONS[int(np.argmax(counts))] if total else None,
                mean_engagement=(
                    self._engagement_sum / self._engagement_frames if self._engagement_frames else None
                ),
                rolling_engagement=MappingProxyType(rolling),
                timeline=timeline,
                log_rows=len(self._log),
            )

    def fps(self) -> float:
        """Frames recorded per second over the last RATE_WINDOW_FRAMES frames (0 before two)."""
        with self._lock:
            return self._fps()

    def _fps(self) -> float:
        times = self._frame_times
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def log_rows(self) -> list[FaceRow]:
        with self._lock:
            return list(self._log)

    def to_csv(self) -> str:
        """The log as CSV text (see emotion.results), one row per logged (frame, face)."""
        return rows_to_csv(self.log_rows())
