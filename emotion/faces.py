"""Find frontal faces with OpenCV's Haar cascade and cut them out the way FER2013 framed its faces.

detect -> square/pad/clip -> crop: `detect_faces` returns boxes in the input image's pixels,
`crop_faces` turns them into the (N, 48, 48) grayscale crops the emotion model takes. How faces
are searched for comes in two named presets, "photo" and "live" (webcam and video), which
`detector_settings` makes stricter or more sensitive.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import NamedTuple

import cv2
import numpy as np

from emotion.labels import FACE_SIZE

logger = logging.getLogger(__name__)

CASCADE_FILE = "haarcascade_frontalface_alt2.xml"  # one of the Haar frontal-face cascades shipped with cv2
CASCADE_WINDOW = 24  # pixels; the cascade's training window, the smallest face it can see
# Images are never shrunk for detection below this many pixels (240x180): a scan this size is
# cheap, and a face that fills most of a small picture is found far more reliably at full size.
MIN_DETECTION_PIXELS = 240 * 180

# FER2013 faces are tight crops from the brows/forehead to the chin. Measured on real faces, that
# framing is the Haar box itself, give or take a few percent. Running detect_faces (padding 0) on
# 400 FER2013 val faces, each upscaled to 96, 160 or 240 px and border-extended, the FER crop's
# side is 1.03x the box's (median; quartiles 0.95-1.09), centres 1.6 % of the side apart.
# On skimage's astronaut and the face clip, the 48x48 crop correlates best with the mean FER2013
# face for a box scaled 1.1x and 1.0x. So the box grows by this fraction of its side on each side
# (1.05x in all).
FACE_PADDING = 0.025


class Box(NamedTuple):
    """A face's square in image pixels: top-left corner (x, y), width w and height h."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h


@dataclass(frozen=True)
class DetectorSettings:
    """How faces are searched for; the defaults balance recall, false alarms and speed.

    scale_factor: step between the image pyramid's levels. 1.15 is as fast as a webcam
        needs (8 ms for a 640x480 frame on 2 cores, against 10-12 ms at 1.1) and still finds
        every face of the face clip and astronaut's face at every size from 300 to 2000 px.
    min_neighbors: overlapping raw detections a face needs. With the alt2 cascade, 3 keeps
        false alarms rare (1 box in 36 face-free photos of skimage.data at 640x480 and
        1600x1200) while finding more blurry faces than OpenCV's default cascade does at
        (1.1, 5): 318 of 600 upscaled FER2013 val faces against 303, with 9 false boxes.
    min_size_fraction: smallest face searched for, as a fraction of the image's shorter
        side (0.05: a face a twentieth of a group photo's height).
    min_face_pixels: and never smaller than this many input pixels: below ~64 px a face has
        little more detail than the model's 48 px input, and the smallest faces cost the most
        time to search for (64 rather than 48 halves detection time at 640x480).
    max_detection_side: cap on the longer side of the image the cascade scans.
    equalize_histogram: spread the grey levels before detecting, so that dark and
        low-contrast faces are found (the crop for the classifier is taken unequalised).
    padding: fraction of the box side added on each side (see FACE_PADDING).

    The image is shrunk (area-averaged) so that the smallest face sought just fills the
    cascade's 24 px window, and to at most max_detection_side, but never below
    MIN_DETECTION_PIXELS: the smallest pyramid levels hold most of the windows, so this is
    most of the speed (a 640x480 frame is scanned at 240x180, a 12 MP photo at 640x480)
    while every face above the minimum is still seen. Boxes are mapped back to input pixels.
    """

    scale_factor: float = 1.15
    min_neighbors: int = 3
    min_size_fraction: float = 0.05
    min_face_pixels: int = 64  # input pixels
    max_detection_side: int = 640  # pixels
    equalize_histogram: bool = True
    padding: float = FACE_PADDING

    def __post_init__(self) -> None:
        if not self.scale_factor > 1.0:
            raise ValueError(f"scale_factor must be above 1.0, got {self.scale_factor}")
        if self.min_neighbors < 0:
            raise ValueError(f"min_neighbors must be 0 or more, got {self.min_neighbors}")
        if not 0.0 <= self.min_size_fraction <= 1.0:
            raise ValueError(f"min_size_fraction must be between 0 and 1, got {self.min_size_fraction}")
        if self.min_face_pixels < 1:
            raise ValueError(f"min_face_pixels must be 1 or more, got {self.min_face_pixels}")
        if self.max_detection_side < CASCADE_WINDOW:
            raise ValueError(
                f"max_detection_side must be at least {CASCADE_WINDOW} px, got {self.max_detection_side}"
            )
        if self.padding < 0.0:
            raise ValueError(f"padding must be 0 or more, got {self.padding}")


class _CascadePool:
    """Haar cascades lent out one caller at a time.

    CascadeClassifier.detectMultiScale is not safe to call on one object from several threads,
    so each concurrent caller borrows its own; loading one parses a large XML file (~50 ms), so
    they are kept for reuse rather than made per call or per (short-lived) thread.
    """

    def __init__(self) -> None:
        self._free: list[cv2.CascadeClassifier] = []
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self) -> Iterator[cv2.CascadeClassifier]:
        with self._lock:
            cascade = self._free.pop() if self._free else None
        if cascade is None:
            cascade = _load_cascade()
        try:
            yield cascade
        finally:
            with self._lock:
                self._free.append(cascade)


def _load_cascade() -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + CASCADE_FILE
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"OpenCV's face detector {path} could not be loaded; reinstall opencv")
    logger.debug("Loaded face cascade %s", path)
    return cascade


_CASCADES = _CascadePool()

# The named presets. Photos: faces from a twentieth of the shorter side, as in a group photo.
PHOTO_DETECTOR = DetectorSettings()
# Webcam frames and videos: a webcam user sits within a metre or two, so faces are large;
# searching only for faces of at least 12 % of the frame's shorter side (and never under
# min_face_pixels) keeps the full-frame search of a 720p or 1080p frame as fast as a 480p one's.
LIVE_DETECTOR = DetectorSettings(min_size_fraction=0.12)
DETECTOR_PRESETS: Mapping[str, DetectorSettings] = MappingProxyType(
    {"photo": PHOTO_DETECTOR, "live": LIVE_DETECTOR}
)
# How eagerly the cascade reports a face: fewer neighbours and a finer scale step find more
# faces (small, turned, dim) and more false ones. "balanced" is each preset as it is.
SENSITIVITIES: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "strict": {"scale_factor": 1.2, "min_neighbors": 5},
        "balanced": {},
        "sensitive": {"scale_factor": 1.05, "min_neighbors": 2},
    }
)


def detector_settings(
    preset: str = "photo", sensitivity: str = "balanced", min_size_fraction: float | None = None
) -> DetectorSettings:
    """A named preset ("photo" or "live") at a sensitivity, looking for faces of at least
    `min_size_fraction` of the shorter side (None: the preset's own minimum).

    The live preset never looks for faces smaller than its own minimum: in a stream they would
    cost more time than the frame rate allows.
    """
    if preset not in DETECTOR_PRESETS:
        raise ValueError(f"Unknown detector preset {preset!r}; choose one of {sorted(DETECTOR_PRESETS)}")
    if sensitivity not in SENSITIVITIES:
        raise ValueError(f"Unknown sensitivity {sensitivity!r}; choose one of {list(SENSITIVITIES)}")
    settings = DETECTOR_PRESETS[preset]
    if min_size_fraction is not None:
        if preset == "live":
            min_size_fraction = max(min_size_fraction, settings.min_size_fraction)
        settings = replace(settings, min_size_fraction=min_size_fraction)
    return replace(settings, **SENSITIVITIES[sensitivity])


def to_gray(image: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) or grayscale (H, W) uint8 -> grayscale (H, W) uint8."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"image must be RGB (H, W, 3) or grayscale (H, W), got shape {image.shape}")


def square_box(
    x: float, y: float, w: float, h: float, image_width: int, image_height: int, padding: float = FACE_PADDING
) -> Box:
    """The square of side max(w, h) * (1 + 2 * padding) centred on the box, moved (or shrunk)
    to lie inside the image: a clipped square would be stretched when resized to 48x48."""
    side = max(w, h) * (1.0 + 2.0 * padding)
    side = round(min(side, image_width, image_height))
    center_x, center_y = x + w / 2.0, y + h / 2.0
    left = round(center_x - side / 2.0)
    top = round(center_y - side / 2.0)
    left = min(max(left, 0), image_width - side)
    top = min(max(top, 0), image_height - side)
    return Box(left, top, side, side)


def detect_faces(image: np.ndarray, settings: DetectorSettings = PHOTO_DETECTOR) -> list[Box]:
    """Frontal faces in an RGB (H, W, 3) or grayscale (H, W) uint8 image, largest first.

    Boxes are in the input's pixels, square, padded to FER2013's framing and inside the image.
    """
    gray = to_gray(image)
    height, width = gray.shape
    min_face = max(settings.min_size_fraction * min(height, width), settings.min_face_pixels)  # input px
    scale = min(1.0, settings.max_detection_side / max(height, width), CASCADE_WINDOW / min_face)
    scale = max(scale, min(1.0, (MIN_DETECTION_PIXELS / (height * width)) ** 0.5))
    detection_size = (round(width * scale), round(height * scale))
    if min(detection_size) < CASCADE_WINDOW:
        return []  # no face of the minimum size fits
    # INTER_AREA averages the pixels it drops, so small faces keep their features.
    small = cv2.resize(gray, detection_size, interpolation=cv2.INTER_AREA) if scale < 1.0 else gray
    if settings.equalize_histogram:
        small = cv2.equalizeHist(small)
    min_side = max(CASCADE_WINDOW, round(min_face * scale))
    with _CASCADES.borrow() as cascade:
        raw_boxes = cascade.detectMultiScale(
            small,
            scaleFactor=settings.scale_factor,
            minNeighbors=settings.min_neighbors,
            minSize=(min_side, min_side),
        )
    # detectMultiScale gives (N, 4) int32, or an empty tuple when nothing is found.
    boxes = [
        square_box(x / scale, y / scale, w / scale, h / scale, width, height, settings.padding)
        for x, y, w, h in np.asarray(raw_boxes, dtype=np.float64).reshape(-1, 4)
    ]
    return sorted(boxes, key=lambda box: (-box.area, box.y, box.x))


def crop_faces(gray: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """The boxes cut out of a grayscale (H, W) uint8 image -> uint8 (N, 48, 48).

    Area interpolation, as FER2013's faces were made (and it averages rather than aliases
    when shrinking a large face).
    """
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"gray must be a grayscale (H, W) uint8 image, got {gray.dtype} {gray.shape}")
    crops = np.empty((len(boxes), FACE_SIZE, FACE_SIZE), dtype=np.uint8)
    height, width = gray.shape
    for index, (x, y, w, h) in enumerate(boxes):
        left, top = max(0, int(x)), max(0, int(y))
        right, bottom = min(width, int(x + w)), min(height, int(y + h))
        if right <= left or bottom <= top:
            raise ValueError(f"box {tuple(boxes[index])} lies outside the {width}x{height} image")
        crops[index] = cv2.resize(
            gray[top:bottom, left:right], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA
        )
    return crops
