"""The photo pipeline in one place: decode -> gray -> faces -> 48x48 crops -> emotions -> annotate.

`analyze_image` takes a decoded RGB image; `analyze_photo` a photo file (decoded by
emotion.image); `process_photo` also draws the faces on it and encodes that as PNG, as the
page shows and offers it (the photo's counterpart of emotion.video.process_video);
`photo_json` gives a photo file's JSON object, the one `python -m emotion predict --json`
prints, for any caller that must answer the same.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

import numpy as np

from emotion.draw import annotate
from emotion.faces import PHOTO_DETECTOR, Box, DetectorSettings, crop_faces, detect_faces, to_gray
from emotion.image import InvalidImage, encode_png, load_image
from emotion.results import Face, photo_record

if TYPE_CHECKING:
    from emotion.classifier import EmotionClassifier

logger = logging.getLogger(__name__)


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


def classify_faces(gray: np.ndarray, boxes: Sequence[Box], classifier: EmotionClassifier) -> list[Face]:
    """Faces for `boxes` in a grayscale (H, W) uint8 image, in the boxes' order; one model call."""
    if len(boxes) == 0:
        return []
    probabilities = classifier.predict_proba(crop_faces(gray, boxes))  # (N, 7)
    return [Face.from_probabilities(box, row) for box, row in zip(boxes, probabilities, strict=True)]


def analyze_image(
    rgb: np.ndarray,
    classifier: EmotionClassifier | None = None,
    settings: DetectorSettings = PHOTO_DETECTOR,
) -> list[Face]:
    """Every face in an RGB (H, W, 3) (or grayscale) uint8 image, largest first; [] if none.

    classifier: None means the bundled model, loaded once per process.
    """
    gray = to_gray(rgb)
    boxes = detect_faces(gray, settings)
    if not boxes:
        return []
    return classify_faces(gray, boxes, classifier if classifier is not None else default_classifier())


def analyze_photo(
    source: bytes | str | Path | BinaryIO,
    classifier: EmotionClassifier | None = None,
    settings: DetectorSettings = PHOTO_DETECTOR,
) -> list[Face]:
    """Every face in a photo file (its bytes, path or open file), largest first; raises InvalidImage."""
    return analyze_image(load_image(source), classifier, settings)


class PhotoResult(NamedTuple):
    faces: list[Face]  # largest first
    annotated_png: bytes  # the upright photo with every face drawn on it, as PNG


def process_photo(
    source: bytes | str | Path | BinaryIO,
    classifier: EmotionClassifier | None = None,
    settings: DetectorSettings = PHOTO_DETECTOR,
) -> PhotoResult:
    """A photo file's faces and the annotated picture; raises InvalidImage."""
    rgb = load_image(source)
    faces = analyze_image(rgb, classifier, settings)
    return PhotoResult(faces, encode_png(annotate(rgb, faces)))


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
    return photo_record(file, faces, error)
