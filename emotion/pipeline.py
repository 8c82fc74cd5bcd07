"""The photo pipeline in one place: decode -> gray -> faces -> 48x48 crops -> emotions -> annotate.

`analyze_image` takes a decoded RGB image; `analyze_photo` a photo file (decoded by
emotion.image); `process_photo` also draws the faces on a scaled-down copy for the page to
show, and `annotated_png` on the full-size photo for its download (together the photo's
counterpart of emotion.video.process_video);
`photo_json` gives a photo file's JSON object, the one `python -m emotion predict --json`
prints, for any caller that must answer the same.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

import cv2
import numpy as np

from emotion.draw import annotate
from emotion.faces import PHOTO_DETECTOR, Box, Detection, DetectorSettings, crop_faces, detect_faces, to_gray
from emotion.image import InvalidImage, encode_jpeg, encode_png, load_image
from emotion.results import Face, photo_record

if TYPE_CHECKING:
    from emotion.classifier import EmotionClassifier

logger = logging.getLogger(__name__)

PREVIEW_MAX_SIDE = 1280  # pixels: the longer side of the annotated photo a page shows
PHOTO_BATCH_MAX = 12  # photos analysed per upload (the page) or request (the HTTP API)
# Photos analysed at once per server, all its users together; the others wait their turn. A
# photo takes up to 650 MB while it is decoded (emotion.image.MAX_PIXELS x PEAK_BYTES_PER_PIXEL),
# and two keep both cores of a small server busy.
PHOTO_SLOTS = 2


_default_classifier: EmotionClassifier | None = None
_default_classifier_lock = threading.Lock()


def default_classifier() -> EmotionClassifier:
    """The bundled model, loaded on first use and shared afterwards; never a downloaded one."""
    global _default_classifier
    with _default_classifier_lock:
        if _default_classifier is None:
            from emotion.classifier import load_classifier

            _default_classifier = load_classifier()
        return _default_classifier


def classify_faces(
    gray: np.ndarray, detections: Sequence[Detection], classifier: EmotionClassifier
) -> list[Face]:
    """Faces for `detections` in a grayscale (H, W) uint8 image, in their order; one model call."""
    if len(detections) == 0:
        return []
    probabilities = classifier.predict_proba(crop_faces(gray, detections))  # (N, 7)
    return [
        Face.from_probabilities(detection.box, row)
        for detection, row in zip(detections, probabilities, strict=True)
    ]


def analyze_image(
    rgb: np.ndarray,
    classifier: EmotionClassifier | None = None,
    settings: DetectorSettings = PHOTO_DETECTOR,
) -> list[Face]:
    """Every face in an RGB (H, W, 3) (or grayscale) uint8 image, largest first; [] if none.

    classifier: None means the bundled model, loaded once per process.
    """
    gray = to_gray(rgb)
    detections = detect_faces(gray, settings)
    if not detections:
        return []
    return classify_faces(gray, detections, classifier if classifier is not None else default_classifier())


class PhotoFaces(NamedTuple):
    faces: list[Face]  # largest first, boxes in the photo's pixels
    width: int  # of the upright photo
    height: int


def photo_faces(
    source: bytes | str | Path | BinaryIO,
    classifier: EmotionClassifier | None = None,
    settings: DetectorSettings = PHOTO_DETECTOR,
) -> PhotoFaces:
    """Every face in a photo file (its bytes, path or open file) and the photo's size, which its
    detection events need; raises InvalidImage."""
    rgb = load_image(source)
    height, width = rgb.shape[:2]
    return PhotoFaces(analyze_image(rgb, classifier, settings), width, height)


def analyze_photo(
    source: bytes | str | Path | BinaryIO,
    classifier: EmotionClassifier | None = None,
    settings: DetectorSettings = PHOTO_DETECTOR,
) -> list[Face]:
    """Every face in a photo file (its bytes, path or open file), largest first; raises InvalidImage."""
    return photo_faces(source, classifier, settings).faces


class ProcessedPhoto(NamedTuple):
    faces: list[Face]  # largest first, boxes in the photo's pixels
    preview: bytes  # the upright photo with every face drawn on it, at most PREVIEW_MAX_SIDE, as JPEG
    size: tuple[int, int]  # (width, height) of the upright photo, in the boxes' pixels


def process_photo(
    source: bytes | str | Path | BinaryIO,
    classifier: EmotionClassifier | None = None,
    settings: DetectorSettings = PHOTO_DETECTOR,
) -> ProcessedPhoto:
    """A photo file's faces and a preview of the annotated picture; raises InvalidImage.

    The preview is small enough to keep for a while (a 12-megapixel photo's is about 0.3 MB);
    `annotated_png` makes the full-size picture when it is asked for.
    """
    rgb = load_image(source)
    faces = analyze_image(rgb, classifier, settings)
    height, width = rgb.shape[:2]
    scale = min(1.0, PREVIEW_MAX_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    shown = [face._replace(box=Box(*(max(1, round(value * scale)) for value in face.box))) for face in faces]
    return ProcessedPhoto(faces, encode_jpeg(annotate(rgb, shown)), (width, height))


def annotated_png(source: bytes | str | Path | BinaryIO, faces: Sequence[Face]) -> bytes:
    """The photo in `source` at full size with `faces` drawn on it, as PNG; raises InvalidImage."""
    return encode_png(annotate(load_image(source), faces))


def photo_json(
    file: str,
    source: bytes | str | Path | BinaryIO,
    classifier: EmotionClassifier | None = None,
    settings: DetectorSettings = PHOTO_DETECTOR,
) -> dict:
    """The JSON object (see emotion.results) for the photo in `source`, named `file`.

    A file that is not a photo we can read gives no faces and the reason under "error".
    """
    try:
        faces, error = analyze_photo(source, classifier, settings), None
    except InvalidImage as invalid:
        faces, error = [], str(invalid)
    return photo_record(file, faces, settings.finder, error)
