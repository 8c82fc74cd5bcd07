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
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np

from emotion.faces.common import CASCADE_WINDOW, Detection, DetectorSettings, shrink, square_box

logger = logging.getLogger(__name__)

CASCADE_FILE = "haarcascade_frontalface_alt2.xml"  # one of the Haar frontal-face cascades shipped with cv2
# Images are never shrunk for detection below this many pixels (240x180): a scan this size is
# cheap, and a face that fills most of a small picture is found far more reliably at full size.
MIN_DETECTION_PIXELS = 240 * 180


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


def find(gray: np.ndarray, settings: DetectorSettings) -> list[Detection]:
    """Upright frontal faces in a grayscale (H, W) uint8 image, in no particular order."""
    height, width = gray.shape
    min_face = settings.min_face(height, width)  # input px
    scale = min(1.0, settings.max_detection_side / max(height, width), CASCADE_WINDOW / min_face)
    scale = max(scale, min(1.0, (MIN_DETECTION_PIXELS / (height * width)) ** 0.5))
    detection_size = (round(width * scale), round(height * scale))
    if min(detection_size) < CASCADE_WINDOW:
        return []  # no face of the minimum size fits
    # INTER_AREA averages the pixels it drops, so small faces keep their features.
    small = shrink(gray, detection_size) if scale < 1.0 else gray
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
    return [
        Detection(square_box(x / scale, y / scale, w / scale, h / scale, width, height, settings.padding))
        for x, y, w, h in np.asarray(raw_boxes, dtype=np.float64).reshape(-1, 4)
    ]
