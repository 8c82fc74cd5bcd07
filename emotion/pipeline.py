"""The photo pipeline in one place: decode -> gray -> faces -> 48x48 crops -> emotions -> annotate.

`analyze_image` takes a decoded RGB image; `photo_faces` a photo file (decoded once, by
emotion.image) and gives its one result, a `Photo`: the faces, the photo's size and the decoded
picture kept for drawing, with what every entry point answers with (its JSON record, CSV rows,
preview, annotated PNG and detection events). `photo_slot` is the one limit on how many photos
a server analyses at once. `analyze_photo`, `process_photo` (what a page keeps: the faces and a
preview), `annotated_png` and `photo_json` (the object `python -m emotion predict --json` prints)
are the same analysis for callers that want one of those alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, ClassVar

import cv2
import numpy as np

from emotion.draw import annotate
from emotion.events import FrameFaces, photo_frames
from emotion.faces import PHOTO_DETECTOR, Box, Detection, DetectorSettings, crop_faces, detect_faces, to_gray
from emotion.image import InvalidImage, encode_jpeg, encode_png, load_image
from emotion.results import Face, photo_csv, photo_record

if TYPE_CHECKING:
    from emotion.classifier import EmotionClassifier

logger = logging.getLogger(__name__)

PREVIEW_MAX_SIDE = 1280  # pixels: the longer side of the annotated photo a page shows
PHOTO_BATCH_MAX = 12  # photos analysed per upload (the page) or request (the HTTP API)
# Photos analysed at once per server, all its users together; the others wait their turn. A
# photo takes up to 650 MB while it is decoded (emotion.image.MAX_PIXELS x PEAK_BYTES_PER_PIXEL),
# and two keep both cores of a small server busy.
PHOTO_SLOTS = 2
_PHOTO_SLOTS = threading.BoundedSemaphore(PHOTO_SLOTS)  # the page's visitors and the API's requests


def photo_slot() -> threading.BoundedSemaphore:
    """One of this process's PHOTO_SLOTS, held while a photo is decoded and analysed:
    `with photo_slot(): ...` waits for a free one."""
    return _PHOTO_SLOTS


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


PhotoSource = bytes | str | Path | BinaryIO  # a photo file: its bytes, path or open file


@dataclass(frozen=True, eq=False)
class Photo:
    """One photo's result: its faces, its size, the finder that found them and, until it is
    `released`, the decoded picture to draw on."""

    kind: ClassVar[str] = "photo"  # of its detection events (emotion.events.SOURCE_KINDS)

    faces: list[Face]  # largest first, boxes in the photo's pixels
    size: tuple[int, int]  # (width, height) of the upright photo, in the boxes' pixels
    finder: str  # the face finder that found them (emotion.faces.FINDERS)
    picture: np.ndarray | None = field(default=None, repr=False)  # the upright RGB (H, W, 3) uint8

    def record(self, file: str) -> dict:
        """Its JSON object (see emotion.results), named `file`."""
        return photo_record(file, self.faces, self.finder)

    def csv(self) -> str:
        """Its CSV text, one row per face (see emotion.results)."""
        return photo_csv(self.faces)

    def frames(self, utc_time: float) -> list[FrameFaces]:
        """Its faces as the one frame of its detection events, analysed at `utc_time`."""
        return photo_frames(self.faces, *self.size, utc_time)

    @cached_property
    def preview(self) -> bytes:
        """The picture with every face drawn on it, at most PREVIEW_MAX_SIDE, as JPEG: small
        enough to keep for a while (a 12-megapixel photo's is about 0.3 MB)."""
        rgb = self._picture()
        width, height = self.size
        scale = min(1.0, PREVIEW_MAX_SIDE / max(height, width))
        if scale < 1.0:
            shown_size = (max(1, round(width * scale)), max(1, round(height * scale)))
            rgb = cv2.resize(rgb, shown_size, interpolation=cv2.INTER_AREA)
        shown = [
            face._replace(box=Box(*(max(1, round(value * scale)) for value in face.box)))
            for face in self.faces
        ]
        return encode_jpeg(annotate(rgb, shown))

    def annotated_png(self) -> bytes:
        """The picture at full size with every face drawn on it, as PNG."""
        return encode_png(annotate(self._picture(), self.faces))

    def released(self) -> Photo:
        """This result without its picture, which holds most of its memory, once nothing more is drawn."""
        return replace(self, picture=None)

    def kept(self) -> Photo:
        """This result as a page keeps it: the faces and the preview, without the full-size picture."""
        kept = self.released()
        kept.__dict__["preview"] = self.preview  # cached_property's own slot: not drawn again
        return kept

    def __iter__(self) -> Iterator:
        """Unpacks as (faces, preview, size): what a page shows of it."""
        return iter((self.faces, self.preview, self.size))

    def _picture(self) -> np.ndarray:
        if self.picture is None:
            raise ValueError("This photo's picture is no longer kept: analyse the file again to draw it")
        return self.picture


def photo_faces(
    source: PhotoSource,
    classifier: EmotionClassifier | None = None,
    settings: DetectorSettings = PHOTO_DETECTOR,
) -> Photo:
    """Every face in a photo file, decoded once, with its size and picture; raises InvalidImage."""
    rgb = load_image(source)
    height, width = rgb.shape[:2]
    return Photo(analyze_image(rgb, classifier, settings), (width, height), settings.finder, rgb)


def analyze_photo(
    source: PhotoSource,
    classifier: EmotionClassifier | None = None,
    settings: DetectorSettings = PHOTO_DETECTOR,
) -> list[Face]:
    """Every face in a photo file, largest first; raises InvalidImage."""
    return photo_faces(source, classifier, settings).faces


def process_photo(
    source: PhotoSource,
    classifier: EmotionClassifier | None = None,
    settings: DetectorSettings = PHOTO_DETECTOR,
) -> Photo:
    """A photo file's faces and preview, as a page keeps them (`Photo.kept`); raises InvalidImage.
    `annotated_png` draws the full-size picture when it is asked for."""
    return photo_faces(source, classifier, settings).kept()


def annotated_png(source: PhotoSource, faces: Sequence[Face]) -> bytes:
    """The photo in `source` at full size with `faces` drawn on it, as PNG; raises InvalidImage."""
    return encode_png(annotate(load_image(source), faces))


def photo_json(
    file: str,
    source: PhotoSource,
    classifier: EmotionClassifier | None = None,
    settings: DetectorSettings = PHOTO_DETECTOR,
) -> dict:
    """The JSON object (see emotion.results) for the photo in `source`, named `file`.

    A file that is not a photo we can read gives no faces and the reason under "error".
    """
    try:
        return photo_faces(source, classifier, settings).record(file)
    except InvalidImage as invalid:
        return photo_record(file, [], settings.finder, str(invalid))
