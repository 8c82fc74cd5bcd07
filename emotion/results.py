"""Face results and their export: one type for a face, one JSON and one CSV schema for every entry point.

A `Face` is what the engine says about one face: in a photo (`emotion.pipeline`), in a webcam
frame or in a video frame (`emotion.live`, where it also carries its track's id). A `FaceRow`
places a face in a stream: the frame and its time. The page's downloads, `python -m emotion
predict --json`, the webcam's session log and the video CSV are all written here:

JSON, one object per photo:
    {"file": "group.jpg", "detector": "blazeface",
     "faces": [{"face_id": 1, "box": [x, y, w, h], "emotion": "happy", "confidence": 0.8731,
                "uncertain": false, "probabilities": {"angry": 0.0132, ..., "neutral": 0.0514}}],
     "error": "..."}                  (only when the photo could not be analysed)
CSV, one row per face (and frame), columns CSV_COLUMNS:
    frame, time_s, face_id, x, y, w, h, emotion, confidence, angry, ..., neutral
    (frame and time_s are empty for a photo)

uncertain is true where no emotion is clearly ahead (see UNCERTAIN_MARGIN): emotion is then
only the likeliest of close readings. face_id is a tracked face's id in a video or webcam
session, stable while the face stays in view, and in a photo the face's number, 1 being the
largest. Boxes are in the pixels of the analysed image (for a video, of the annotated video).
Probabilities follow EMOTIONS' order. detector names the face finder that found the faces
(emotion.faces.FINDERS).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from emotion.faces import Box
from emotion.labels import EMOTIONS

DECIMALS = 4  # probabilities, confidences and times in exports: finer than the model's own noise
# A face is uncertain when its likeliest emotion leads the next by less than this. The model's
# probabilities are calibrated to the share of people who would read the face each way, so this
# is about one person in ten.
UNCERTAIN_MARGIN = 0.10
CSV_COLUMNS = ("frame", "time_s", "face_id", "x", "y", "w", "h", "emotion", "confidence", *EMOTIONS)


class Face(NamedTuple):
    """One face found in an image and what the model reads in it."""

    box: Box  # input-image pixels
    probabilities: np.ndarray  # (7,) float32, in EMOTIONS order, summing to 1
    emotion: str  # EMOTIONS[argmax(probabilities)]
    id: int | None = None  # a tracked face's id, stable while it stays in view; None in a photo

    @classmethod
    def from_probabilities(cls, box: Sequence[int], probabilities: np.ndarray, id: int | None = None) -> Face:
        """The face in `box` with these (7,) probabilities; its emotion is the likeliest."""
        probabilities = np.array(probabilities, dtype=np.float32)  # a copy
        return cls(Box(*box), probabilities, EMOTIONS[int(np.argmax(probabilities))], id)

    @property
    def confidence(self) -> float:
        """The probability of `emotion`."""
        return float(self.probabilities.max())

    @property
    def runner_up(self) -> str:
        """The second likeliest emotion."""
        return EMOTIONS[int(np.argsort(self.probabilities)[-2])]

    @property
    def runner_up_probability(self) -> float:
        """The probability of `runner_up`."""
        return float(np.sort(self.probabilities)[-2])

    @property
    def uncertain(self) -> bool:
        """Whether no emotion is clearly ahead: the likeliest leads the next by less than UNCERTAIN_MARGIN."""
        return self.confidence - self.runner_up_probability < UNCERTAIN_MARGIN


class FaceRow(NamedTuple):
    """One face in one frame of a video or a webcam session (or in a photo: no frame, no time)."""

    frame: int | None  # 0-based index of the frame in the video or the session; None: a photo
    time_s: float | None  # the frame's time, in the video or since the session started
    face: Face


def rounded(value: float) -> float:
    """A probability, confidence or time as exported."""
    return round(float(value), DECIMALS)


def numbered(faces: Iterable[Face]) -> list[Face]:
    """The faces with their face_id: a tracked face keeps its id, a photo's faces are numbered from 1."""
    return [face if face.id is not None else face._replace(id=number) for number, face in enumerate(faces, 1)]


def face_record(face: Face) -> dict:
    """One face as JSON (see the module's docstring); face.id must be set (see `numbered`)."""
    return {
        "face_id": face.id,
        "box": [int(value) for value in face.box],
        "emotion": face.emotion,
        "confidence": rounded(face.confidence),
        "uncertain": face.uncertain,
        "probabilities": {
            emotion: rounded(probability)
            for emotion, probability in zip(EMOTIONS, face.probabilities, strict=True)
        },
    }


def photo_record(file: str, faces: Sequence[Face], detector: str, error: str | None = None) -> dict:
    """The JSON object for one photo: its name, the face finder that looked at it, its faces
    (largest first) and why it failed, if it did."""
    record = {"file": file, "detector": detector, "faces": [face_record(face) for face in numbered(faces)]}
    if error is not None:
        record["error"] = error
    return record


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...), say);
# every CSV this project writes starts such a text cell with an apostrophe, which shows as text.
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(text: str) -> str:
    """A text cell for a CSV file, neutralised if a spreadsheet would take it for a formula."""
    return "'" + text if text.startswith(CSV_FORMULA_STARTS) else text


def rows_to_csv(rows: Iterable[FaceRow]) -> str:
    """CSV text: a header of CSV_COLUMNS and one line per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for frame, time_s, face in rows:
        writer.writerow(
            [
                frame,
                _csv_number(time_s),
                face.id,
                *(int(value) for value in face.box),
                csv_text(face.emotion),
                _csv_number(face.confidence),
                *(_csv_number(probability) for probability in face.probabilities),
            ]
        )
    return buffer.getvalue()


def photo_csv(faces: Sequence[Face]) -> str:
    """CSV text for one photo's faces, largest first; frame and time_s are empty."""
    return rows_to_csv(FaceRow(None, None, face) for face in numbered(faces))


def _csv_number(value: float | None) -> str:
    return "" if value is None else f"{float(value):.{DECIMALS}f}"
