"""Live analysis of a frame stream: detect -> track -> classify -> smooth -> log -> draw.

`LiveAnalyzer.process(bgr)` handles one webcam (or video) frame at a time. Faces are matched to
the tracks of earlier frames by box overlap (IoU), so each face keeps a stable id; each track's
probabilities and box are smoothed with an exponential moving average, so a single odd frame
does not flip the label or make the box jitter. The cascade detector, the slowest step by far,
searches the whole frame only on every Nth frame; in between, each face is followed by matching
its last detected image near its box (template matching, well under a millisecond), and the
classifier runs on the faces found.

streamlit-webrtc calls `process` from its own thread while the page calls `snapshot()`: the
session statistics sit behind a lock and `snapshot` returns copies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple, Protocol

import cv2
import numpy as np

from emotion.draw import annotate_frame
from emotion.engagement import DEFAULT_PRESET, engagement_score, get_preset
from emotion.faces import LIVE_DETECTOR, Box, DetectorSettings, crop_faces, detect_faces
from emotion.labels import EMOTIONS
from emotion.results import Face, FaceRow, rows_to_csv

logger = logging.getLogger(__name__)

LOG_MAX_ROWS = 18_000  # one face for one hour at 5 rows/s (~10 MB); older rows drop off first
LOG_INTERVAL_S = 0.2  # at most 5 log rows per face and second: webcam frames repeat themselves
TIMELINE_S = 60  # the per-second engagement timeline covers the last minute
ROLLING_WINDOWS_S = (30, 60)  # rolling engagement averages shown on the page
RATE_WINDOW_FRAMES = 30  # FPS and latency are measured over the last second or so of frames
# Between full-frame detections each face is followed by template matching: the face as last
# detected, shrunk to TEMPLATE_SIDE pixels, is looked for in a square TRACK_SEARCH_SCALE times
# its side around it (a face moves far less than half its width in one frame). That costs well
# under a millisecond, against tens for the cascade; the box's size is updated by the next
# detection.
TEMPLATE_SIDE = 32  # pixels: enough texture to lock on, small enough to be nearly free
TRACK_SEARCH_SCALE = 2.0
MIN_TEMPLATE_CONTRAST = 2.0  # grey-level standard deviation; a flatter patch cannot be followed
TRACK_MIN_MATCH = 0.6  # normalised correlation; below it the face is taken as lost this frame
MAX_UNCONFIRMED_DETECTIONS = 3  # a track followed but not re-detected in this many detections is dropped


class Classifier(Protocol):
    def predict_proba(self, faces: np.ndarray) -> np.ndarray: ...


Detector = Callable[[np.ndarray], list[Box]]  # grayscale (H, W) uint8 -> boxes, largest first


@dataclass(frozen=True)
class LiveSettings:
    """How a LiveAnalyzer detects, tracks, smooths and draws."""

    detector: DetectorSettings = LIVE_DETECTOR  # the full-frame search
    detect_every: int = 5  # search the whole frame on every Nth frame (new faces appear within N)
    # How much a face's probabilities keep from earlier frames (an exponential moving average):
    # 0 = none, the newest frame alone; higher is steadier, lower reacts faster.
    smoothing: float = 0.65
    box_smoothing: float = 0.4  # the same for its box: boxes may follow faster than labels
    iou_threshold: float = 0.3  # a detection continues a track if their boxes overlap this much
    max_missed_frames: int = 8  # a track not detected for more frames than this is dropped
    max_faces: int = 5  # the largest faces of a crowd; each face costs classifier time
    engagement_preset: str = DEFAULT_PRESET  # a key of emotion.engagement.PRESETS
    log_interval_s: float = LOG_INTERVAL_S
    log_max_rows: int = LOG_MAX_ROWS
    show_fps: bool = True

    def __post_init__(self):
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be at least 1, got {self.detect_every}")
        for name in ("smoothing", "box_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.max_missed_frames < 0 or self.max_faces < 1 or self.log_max_rows < 1:
            raise ValueError("max_missed_frames must be >= 0, max_faces and log_max_rows >= 1")
        get_preset(self.engagement_preset)  # an unknown preset fails here, not mid-stream


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


def iou_matrix(boxes_a: Sequence[Box], boxes_b: Sequence[Box]) -> np.ndarray:
    """Intersection over union of every pair: float (len(a), len(b))."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    bottom = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    intersection = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def match_boxes(
    track_boxes: Sequence[Box], detections: Sequence[Box], iou_threshold: float
) -> list[tuple[int, int]]:
    """Greedy one-to-one matching, best overlap first: [(track index, detection index)]."""
    overlaps = iou_matrix(track_boxes, detections)
    pairs = []
    while overlaps.size and overlaps.max() >= iou_threshold:
        track_index, detection_index = np.unravel_index(np.argmax(overlaps), overlaps.shape)
        pairs.append((int(track_index), int(detection_index)))
        overlaps[track_index, :] = -1.0
        overlaps[:, detection_index] = -1.0
    return pairs


@dataclass
class _Track:
    id: int
    box: np.ndarray  # float64 (4,): x, y, w, h, smoothed
    probabilities: np.ndarray | None  # float32 (7,), smoothed; None until first classified
    last_detected: int  # frame index of the last detection by the cascade
    last_seen: int  # frame index of the last detection or template match
    template: np.ndarray | None = None  # uint8 (TEMPLATE_SIDE, TEMPLATE_SIDE): the face as last detected
    template_side: float = 0.0  # the detected box's side the template was shrunk from

    def rounded_box(self, width: int, height: int) -> Box:
        x, y, w, h = np.rint(self.box).astype(int)
        x, y = min(max(x, 0), width - 1), min(max(y, 0), height - 1)
        return Box(int(x), int(y), int(max(1, min(w, width - x))), int(max(1, min(h, height - y))))


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
            # [second, engagement sum, frames, emotion counts (7,)] per second with faces
            self._seconds: deque[list] = deque(maxlen=TIMELINE_S + 1)
            self._frame_times: deque[float] = deque(maxlen=RATE_WINDOW_FRAMES)  # perf_counter
            self._latencies_s: deque[float] = deque(maxlen=RATE_WINDOW_FRAMES)
            self._elapsed_s = 0.0
            self._faces: tuple[Face, ...] = ()

    def record(self, time_s: float, faces: Sequence[Face], latency_s: float) -> None:
        """Add one processed frame: its time in the session, its tracked faces and how long it took."""
        with self._lock:
            frame = self._frames
            self._frames += 1
            self._elapsed_s = max(self._elapsed_s, time_s)
            self._frame_times.append(time.perf_counter())
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
            if not self._seconds or self._seconds[-1][0] != second:
                self._seconds.append([second, 0.0, 0, np.zeros(len(EMOTIONS), dtype=np.int64)])
            bin_ = self._seconds[-1]
            bin_[1] += frame_engagement
            bin_[2] += 1
            np.add.at(bin_[3], emotion_indices, 1)
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
                recent = [bin_ for bin_ in self._seconds if bin_[0] > now_second - window_s]
                frames = sum(bin_[2] for bin_ in recent)
                rolling[window_s] = sum(bin_[1] for bin_ in recent) / frames if frames else None
            timeline = tuple(
                TimelinePoint(bin_[0], bin_[1] / bin_[2], EMOTIONS[int(np.argmax(bin_[3]))])
                for bin_ in self._seconds
                if bin_[0] > now_second - TIMELINE_S
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
        self.classifier = classifier
        self.settings = settings
        self._detector = detector or (lambda gray: detect_faces(gray, settings.detector))
        self._clock = clock
        self.stats = SessionStats(settings.engagement_preset, settings.log_max_rows, settings.log_interval_s)
        self._process_lock = threading.Lock()  # the tracks belong to one process() at a time
        self._reset_tracks()

    def _reset_tracks(self) -> None:
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._frame_index = 0
        self._frame_shape: tuple[int, ...] = ()
        self._start = self._clock()

    def reset(self) -> None:
        """Forget the tracks and the statistics: a new session."""
        with self._process_lock:
            self._reset_tracks()
            self.stats.reset()

    def snapshot(self) -> SessionSnapshot:
        return self.stats.snapshot()

    def log_csv(self) -> str:
        return self.stats.to_csv()

    def process(self, bgr: np.ndarray, time_s: float | None = None) -> tuple[np.ndarray, list[Face]]:
        """One BGR uint8 (H, W, 3) frame -> (annotated copy, faces in view ordered by id).

        time_s: the frame's time in the session; None means the clock's time since the start.
        """
        started = time.perf_counter()
        bgr = _check_frame(bgr)
        with self._process_lock:
            if time_s is None:
                time_s = self._clock() - self._start
            gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
            if gray.shape != self._frame_shape:
                # The camera changed resolution: the old boxes mean nothing in the new frame.
                self._tracks = []
                self._frame_shape = gray.shape
            faces = self._track(gray)
            self._frame_index += 1
        annotated = annotate_frame(bgr, faces, self.stats.fps() if self.settings.show_fps else None)
        self.stats.record(time_s, faces, time.perf_counter() - started)
        return annotated, faces

    def _track(self, gray: np.ndarray) -> list[Face]:
        settings = self.settings
        height, width = gray.shape
        if self._frame_index % settings.detect_every == 0:
            detections = list(self._detector(gray))[: settings.max_faces]
            self._update_tracks(gray, detections)
            found = [track for track in self._tracks if track.last_detected == self._frame_index]
        else:
            found = [track for track in self._tracks if self._follow(gray, track)]
            self._drop_lost_tracks()
        # Only faces found in this frame are classified: a lingering track (its face lost for a
        # few frames) keeps its last probabilities instead of learning from whatever is now
        # behind its box.
        if found:
            boxes = [track.rounded_box(width, height) for track in found]
            probabilities = self.classifier.predict_proba(crop_faces(gray, boxes))  # (N, 7)
            for track, new in zip(found, probabilities, strict=True):
                if track.probabilities is None:
                    track.probabilities = new.astype(np.float32)
                else:
                    kept = settings.smoothing
                    track.probabilities = kept * track.probabilities + (1 - kept) * new
        faces = []
        for track in self._tracks:
            if track.probabilities is None:
                continue
            box = track.rounded_box(width, height)
            faces.append(Face.from_probabilities(box, track.probabilities, track.id))
        return faces

    def _follow(self, gray: np.ndarray, track: _Track) -> bool:
        """Look for the track's face template near its box; True (and the box moved) if found."""
        if track.template is None:
            return False
        height, width = gray.shape
        x, y, w, h = track.box
        margin = (TRACK_SEARCH_SCALE - 1.0) / 2.0 * max(w, h)
        left, top = int(max(0, x - margin)), int(max(0, y - margin))
        right, bottom = int(min(width, x + w + margin)), int(min(height, y + h + margin))
        scale = TEMPLATE_SIDE / track.template_side
        search_size = (round((right - left) * scale), round((bottom - top) * scale))
        if min(search_size) < TEMPLATE_SIDE:
            return False
        search = cv2.resize(gray[top:bottom, left:right], search_size, interpolation=cv2.INTER_AREA)
        scores = cv2.matchTemplate(search, track.template, cv2.TM_CCOEFF_NORMED)
        _, best_score, _, (best_x, best_y) = cv2.minMaxLoc(scores)
        if best_score < TRACK_MIN_MATCH:
            return False
        side = track.template_side
        self._move(track, (left + best_x / scale, top + best_y / scale, side, side))
        return True

    def _move(self, track: _Track, box: Sequence[float]) -> None:
        kept = self.settings.box_smoothing
        track.box = kept * track.box + (1 - kept) * np.asarray(box, dtype=np.float64)
        track.last_seen = self._frame_index

    def _detected(self, track: _Track, gray: np.ndarray, box: Box) -> None:
        """The cascade found the track's face at `box`: move there and renew the template."""
        self._move(track, box)
        track.last_detected = self._frame_index
        x, y, w, h = box
        face = gray[max(0, y) : y + h, max(0, x) : x + w]
        track.template = None
        if face.size:
            template = cv2.resize(face, (TEMPLATE_SIDE, TEMPLATE_SIDE), interpolation=cv2.INTER_AREA)
            # A featureless patch matches anywhere (its normalised correlation is undefined).
            if template.std() >= MIN_TEMPLATE_CONTRAST:
                track.template, track.template_side = template, float(max(w, h))

    def _drop_lost_tracks(self) -> None:
        settings = self.settings
        unconfirmed_limit = max(
            settings.max_missed_frames, MAX_UNCONFIRMED_DETECTIONS * settings.detect_every
        )
        self._tracks = [
            track
            for track in self._tracks
            if self._frame_index - track.last_seen <= settings.max_missed_frames
            and self._frame_index - track.last_detected <= unconfirmed_limit
        ]

    def _update_tracks(self, gray: np.ndarray, detections: list[Box]) -> None:
        settings = self.settings
        track_boxes = [Box(*track.box) for track in self._tracks]
        matched_detections = set()
        for track_index, detection_index in match_boxes(track_boxes, detections, settings.iou_threshold):
            self._detected(self._tracks[track_index], gray, detections[detection_index])
            matched_detections.add(detection_index)
        self._drop_lost_tracks()
        for detection_index, box in enumerate(detections):
            if detection_index not in matched_detections and len(self._tracks) < settings.max_faces:
                track = _Track(self._next_id, np.asarray(box, dtype=np.float64), None, -1, -1)
                self._detected(track, gray, box)
                self._tracks.append(track)
                self._next_id += 1


def _check_frame(bgr: np.ndarray) -> np.ndarray:
    bgr = np.asarray(bgr)
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ValueError(f"A frame must be BGR uint8 (H, W, 3), got {bgr.dtype} {bgr.shape}")
    if min(bgr.shape[:2]) < 1:
        raise ValueError("A frame must not be empty")
    return bgr
