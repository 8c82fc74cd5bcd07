"""Follow faces through a stream of frames: detect -> match to tracks -> follow -> classify -> smooth.

`FaceTracker.update(gray)` takes one frame at a time. Faces are matched to the tracks of earlier
frames by box overlap (IoU), so each face keeps a stable id; each track's probabilities and box
are smoothed with an exponential moving average, so a single odd frame does not flip the label
or make the box jitter. The face finder, the slowest step by far, searches the whole frame
only on every Nth frame; in between, each face is followed by matching its last detected image
near its box (template matching, well under a millisecond), and the classifier runs on the
faces found.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from emotion.faces import LIVE_DETECTOR, Box, Detection, DetectorSettings, crop_faces, detect_faces
from emotion.faces.common import block_average
from emotion.results import Face

# Between full-frame detections each face is followed by template matching: the face as last
# detected, averaged in whole blocks to about TEMPLATE_SIDE pixels, is looked for in a square
# TRACK_SEARCH_SCALE times its side around it, averaged alike (a face moves far less than half
# its width in one frame). That costs a small part of a face finder's search (the README's webcam
# rounds give both); the box's size is updated by the next detection.
TEMPLATE_SIDE = 32  # pixels: enough texture to lock on, small enough to be nearly free
TRACK_SEARCH_SCALE = 2.0
MIN_TEMPLATE_CONTRAST = 2.0  # grey-level standard deviation; a flatter patch cannot be followed
TRACK_MIN_MATCH = 0.6  # normalised correlation; below it the face is taken as lost this frame
MAX_UNCONFIRMED_DETECTIONS = 3  # a track followed but not re-detected in this many detections is dropped


class Classifier(Protocol):
    def predict_proba(self, faces: np.ndarray) -> np.ndarray: ...


Detector = Callable[[np.ndarray], list[Detection]]  # grayscale (H, W) uint8 -> faces, largest first


@dataclass(frozen=True)
class TrackingSettings:
    """How a FaceTracker searches for, follows and smooths faces."""

    detector: DetectorSettings = LIVE_DETECTOR  # the full-frame search
    detect_every: int = 10  # search the whole frame on every Nth frame (new faces appear within N)
    # Read each face's emotion on every Nth frame (a new face's at once); its box follows it on
    # every frame, and its label keeps the probabilities read last.
    classify_every: int = 1
    # How much a face's probabilities keep from one frame to the next (an exponential moving
    # average, the same in time whatever classify_every): 0 = none, the newest reading alone;
    # higher is steadier, lower reacts faster.
    smoothing: float = 0.65
    box_smoothing: float = 0.4  # the same for its box: boxes may follow faster than labels
    iou_threshold: float = 0.3  # a detection continues a track if their boxes overlap this much
    max_missed_frames: int = 8  # a track not detected for more frames than this is dropped
    max_faces: int = 5  # the largest faces of a crowd; each face costs classifier time

    def __post_init__(self):
        for name in ("detect_every", "classify_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("smoothing", "box_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.max_missed_frames < 0 or self.max_faces < 1:
            raise ValueError("max_missed_frames must be >= 0 and max_faces >= 1")


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
    last_detected: int  # frame index of the last detection by the face finder
    last_seen: int  # frame index of the last detection or template match
    template: np.ndarray | None = None  # uint8: the face as last detected, averaged in blocks
    template_side: float = 0.0  # the detected box's side
    template_block: int = 1  # the side of the template's blocks, in the frame's pixels
    angle: float = 0.0  # degrees the face's eyes are turned (see Detection.angle), smoothed like the box

    def rounded_box(self, width: int, height: int) -> Box:
        x, y, w, h = np.rint(self.box).astype(int)
        x, y = min(max(x, 0), width - 1), min(max(y, 0), height - 1)
        return Box(int(x), int(y), int(max(1, min(w, width - x))), int(max(1, min(h, height - y))))


class FaceTracker:
    """The faces of a stream of frames, each with a stable id; one caller at a time."""

    def __init__(
        self,
        classifier: Classifier,
        settings: TrackingSettings = TrackingSettings(),
        detector: Detector | None = None,
    ):
        self.classifier = classifier
        self.settings = settings
        self.detector = detector or (lambda gray: detect_faces(gray, settings.detector))
        self.reset()

    def reset(self) -> None:
        """Forget every track; ids start again from 1."""
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._frame_index = 0
        self._frame_shape: tuple[int, ...] = ()

    def update(self, gray: np.ndarray) -> list[Face]:
        """The next grayscale (H, W) uint8 frame -> the faces in view, ordered by id."""
        if gray.shape != self._frame_shape:
            # The camera changed resolution: the old boxes mean nothing in the new frame.
            self._tracks = []
            self._frame_shape = gray.shape
        faces = self._track(gray)
        self._frame_index += 1
        return faces

    def _track(self, gray: np.ndarray) -> list[Face]:
        settings = self.settings
        height, width = gray.shape
        if self._frame_index % settings.detect_every == 0:
            detections = list(self.detector(gray))[: settings.max_faces]
            self._update_tracks(gray, detections)
            found = [track for track in self._tracks if track.last_detected == self._frame_index]
        else:
            found = [track for track in self._tracks if self._follow(gray, track)]
            self._drop_lost_tracks()
        # Only faces found in this frame are classified: a lingering track (its face lost for a
        # few frames) keeps its last probabilities instead of learning from whatever is now
        # behind its box.
        reading = self._frame_index % settings.classify_every == 0
        read = [track for track in found if reading or track.probabilities is None]
        if read:
            detections = [Detection(track.rounded_box(width, height), track.angle) for track in read]
            probabilities = self.classifier.predict_proba(crop_faces(gray, detections))  # (N, 7)
            kept = settings.smoothing**settings.classify_every  # what N frames of smoothing keep
            for track, new in zip(read, probabilities, strict=True):
                if track.probabilities is None:
                    track.probabilities = new.astype(np.float32)
                else:
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
        block = track.template_block
        search = block_average(gray[top:bottom, left:right], block)
        if search.shape[0] < track.template.shape[0] or search.shape[1] < track.template.shape[1]:
            return False
        scores = cv2.matchTemplate(search, track.template, cv2.TM_CCOEFF_NORMED)
        _, best_score, _, (best_x, best_y) = cv2.minMaxLoc(scores)
        if best_score < TRACK_MIN_MATCH:
            return False
        side = track.template_side
        self._move(track, (left + best_x * block, top + best_y * block, side, side))
        return True

    def _move(self, track: _Track, box: Sequence[float]) -> None:
        kept = self.settings.box_smoothing
        track.box = kept * track.box + (1 - kept) * np.asarray(box, dtype=np.float64)
        track.last_seen = self._frame_index

    def _detected(self, track: _Track, gray: np.ndarray, detection: Detection) -> None:
        """The finder found the track's face: move there, turn with it and renew the template."""
        self._move(track, detection.box)
        kept = self.settings.box_smoothing
        turn = (detection.angle - track.angle + 180.0) % 360.0 - 180.0  # the short way round
        track.angle = (track.angle + (1 - kept) * turn + 180.0) % 360.0 - 180.0
        track.last_detected = self._frame_index
        x, y, w, h = detection.box
        side = max(w, h)
        block = max(1, round(side / TEMPLATE_SIDE))
        template = block_average(gray[max(0, y) : y + h, max(0, x) : x + w], block)
        track.template = None
        # A featureless patch matches anywhere (its normalised correlation is undefined).
        if template.size and template.std() >= MIN_TEMPLATE_CONTRAST:
            track.template, track.template_side, track.template_block = template, float(side), block

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

    def _update_tracks(self, gray: np.ndarray, detections: list[Detection]) -> None:
        settings = self.settings
        track_boxes = [Box(*track.box) for track in self._tracks]
        detected_boxes = [detection.box for detection in detections]
        matched_detections = set()
        for track_index, detection_index in match_boxes(track_boxes, detected_boxes, settings.iou_threshold):
            self._detected(self._tracks[track_index], gray, detections[detection_index])
            matched_detections.add(detection_index)
        self._drop_lost_tracks()
        for detection_index, detection in enumerate(detections):
            if detection_index not in matched_detections and len(self._tracks) < settings.max_faces:
                box = np.asarray(detection.box, dtype=np.float64)
                track = _Track(self._next_id, box, None, -1, -1, angle=detection.angle)
                self._detected(track, gray, detection)
                self._tracks.append(track)
                self._next_id += 1
