"""Find upright frontal faces with OpenCV's Haar cascade (the alt2 frontal-face cascade).

The image is shrunk (area-averaged) so that the smallest face sought just fills the
cascade's 24 px window, and to at most max_detection_side, but never below
MIN_DETECTION_PIXELS: the smallest pyramid levels hold most of the windows, so this is
most of the speed (a 640x480 frame is scanned at 240x180, a 12 MP photo at 640x480)
while every face above the minimum is still seen. Boxes are mapped back to input pixels.
The cascade sees no eyes, so its faces are cut out as found (angle 0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import MappingProxyType

import cv2
import numpy as np

from emotion.faces.common import (
    CASCADE_WINDOW,
    FACE_PADDING,
    Detection,
    DetectorSettings,
    FaceFinder,
    shrink,
    square_box,
)
from emotion.faces.pool import LendingPool

logger = logging.getLogger(__name__)

FINDER_NAME = "haar"
CASCADE_FILE = "haarcascade_frontalface_alt2.xml"  # one of the Haar frontal-face cascades shipped with cv2
# Images are never shrunk for detection below this many pixels (240x180): a scan this size is
# cheap, and a face that fills most of a small picture is found far more reliably at full size.
MIN_DETECTION_PIXELS = 240 * 180


@dataclass(frozen=True)
class HaarSettings:
    """The Haar cascade's own settings.

    scale_factor: step between the image pyramid's levels. 1.15 is as fast as a webcam
        needs and still finds every face of the face clip and astronaut's face at every size
        from 300 to 2000 px.
    min_neighbors: overlapping raw detections a face needs. With the alt2 cascade, 3 keeps
        false alarms rare while finding more blurry faces than OpenCV's default cascade does
        at (1.1, 5). model/FACE_FINDERS.md ("Settings") has the figures of both choices.
    equalize_histogram: spread the grey levels before detecting, so that dark and
        low-contrast faces are found (the crop for the classifier is taken unequalised).
    padding: fraction of the box side added on each side (see FACE_PADDING).
    """

    scale_factor: float = 1.15
    min_neighbors: int = 3
    equalize_histogram: bool = True
    padding: float = FACE_PADDING

    def __post_init__(self) -> None:
        if not self.scale_factor > 1.0:
            raise ValueError(f"scale_factor must be above 1.0, got {self.scale_factor}")
        if self.min_neighbors < 0:
            raise ValueError(f"min_neighbors must be 0 or more, got {self.min_neighbors}")
        if self.padding < 0.0:
            raise ValueError(f"padding must be 0 or more, got {self.padding}")


def _load_cascade() -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + CASCADE_FILE
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"OpenCV's face detector {path} could not be loaded; reinstall opencv")
    logger.debug("Loaded face cascade %s", path)
    return cascade


# CascadeClassifier.detectMultiScale is not safe to call on one object from several threads, and
# loading one parses a large XML file, slower than a search: each concurrent caller borrows its own.
CASCADES: LendingPool[None, cv2.CascadeClassifier] = LendingPool(lambda _: _load_cascade())


def find(gray: np.ndarray, settings: DetectorSettings) -> list[Detection]:
    """Upright frontal faces in a grayscale (H, W) uint8 image, in no particular order."""
    haar: HaarSettings = settings.tuning(FINDER_NAME)
    height, width = gray.shape
    min_face = settings.min_face(height, width)  # input px
    scale = min(1.0, settings.max_detection_side / max(height, width), CASCADE_WINDOW / min_face)
    scale = max(scale, min(1.0, (MIN_DETECTION_PIXELS / (height * width)) ** 0.5))
    detection_size = (round(width * scale), round(height * scale))
    if min(detection_size) < CASCADE_WINDOW:
        return []  # no face of the minimum size fits
    # INTER_AREA averages the pixels it drops, so small faces keep their features.
    small = shrink(gray, detection_size) if scale < 1.0 else gray
    if haar.equalize_histogram:
        small = cv2.equalizeHist(small)
    min_side = max(CASCADE_WINDOW, round(min_face * scale))
    with CASCADES.borrow() as cascade:
        raw_boxes = cascade.detectMultiScale(
            small,
            scaleFactor=haar.scale_factor,
            minNeighbors=haar.min_neighbors,
            minSize=(min_side, min_side),
        )
    # detectMultiScale gives (N, 4) int32, or an empty tuple when nothing is found.
    return [
        Detection(square_box(x / scale, y / scale, w / scale, h / scale, width, height, haar.padding))
        for x, y, w, h in np.asarray(raw_boxes, dtype=np.float64).reshape(-1, 4)
    ]


FINDER = FaceFinder(
    name=FINDER_NAME,
    summary="Haar cascade: upright faces only",
    help="The Haar cascade finds only upright, frontal faces: a head turned by 30 degrees is "
    "mostly missed. The face finders' card (model/FACE_FINDERS.md) gives how many it finds and its "
    "CPU time per picture.",
    find=find,
    settings=HaarSettings,
    # Fewer neighbours and a finer scale step find more faces, and more false ones.
    sensitivities=MappingProxyType(
        {
            "strict": {"scale_factor": 1.2, "min_neighbors": 5},
            "sensitive": {"scale_factor": 1.05, "min_neighbors": 2},
        }
    ),
)
