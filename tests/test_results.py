"""The one face type and its JSON and CSV export, shared by photos, the webcam and videos."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from emotion import EMOTIONS, Box, Face, FaceRow, photo_record
from emotion.results import CSV_COLUMNS, DECIMALS, csv_text, face_record, numbered, photo_csv, rows_to_csv

PROBABILITIES = np.array([0.01, 0.02, 0.03, 0.81234567, 0.05, 0.06, 0.01765433], dtype=np.float32)


def test_a_face_reads_its_emotion_and_confidence_from_its_probabilities():
    face = Face.from_probabilities((10, 20, 30, 30), PROBABILITIES)
    assert face.box == Box(10, 20, 30, 30) and face.emotion == "happy" and face.id is None
    assert face.confidence == pytest.approx(0.81234567)
    assert face.probabilities.dtype == np.float32
    assert Face.from_probabilities((0, 0, 1, 1), PROBABILITIES, id=7).id == 7


def test_photo_faces_are_numbered_largest_first_and_tracked_faces_keep_their_ids():
    small, large = (
        Face.from_probabilities((0, 0, 5, 5), PROBABILITIES),
        Face.from_probabilities((0, 0, 50, 50), PROBABILITIES),
    )
    assert [face.id for face in numbered([large, small])] == [1, 2]
    assert [face.id for face in numbered([large._replace(id=9)])] == [9]


def test_the_json_of_a_photo():
    faces = [Face.from_probabilities((10, 20, 30, 30), PROBABILITIES)]
    record = json.loads(json.dumps(photo_record("photo.jpg", faces, "blazeface")))
    assert record == {
        "file": "photo.jpg",
        "detector": "blazeface",
        "faces": [
            {
                "face_id": 1,
                "box": [10, 20, 30, 30],
                "emotion": "happy",
                "confidence": round(float(PROBABILITIES[3]), DECIMALS),
                "uncertain": False,
                "probabilities": {
                    emotion: round(float(value), DECIMALS)
                    for emotion, value in zip(EMOTIONS, PROBABILITIES, strict=True)
                },
            }
        ],
    }
    assert photo_record("broken.jpg", [], "haar", "not an image") == {
        "file": "broken.jpg",
        "detector": "haar",
        "faces": [],
        "error": "not an image",
    }


def test_one_csv_schema_for_photos_and_streams():
    face = Face.from_probabilities((10, 20, 30, 30), PROBABILITIES)
    photo = list(csv.DictReader(io.StringIO(photo_csv([face, face]))))
    stream = list(csv.DictReader(io.StringIO(rows_to_csv([FaceRow(12, 0.4, face._replace(id=3))]))))
    assert tuple(photo[0]) == tuple(stream[0]) == CSV_COLUMNS
    assert [row["face_id"] for row in photo] == ["1", "2"]
    assert photo[0]["frame"] == photo[0]["time_s"] == ""
    assert stream[0]["frame"] == "12" and stream[0]["time_s"] == "0.4000" and stream[0]["face_id"] == "3"
    for row in (photo[0], stream[0]):
        assert (row["x"], row["y"], row["w"], row["h"]) == ("10", "20", "30", "30")
        assert row["emotion"] == "happy" and row["confidence"] == "0.8123" == row["happy"]
        assert float(row["neutral"]) == round(float(PROBABILITIES[6]), DECIMALS)


def test_a_face_with_no_emotion_clearly_ahead_is_uncertain():
    close = Face.from_probabilities((0, 0, 10, 10), [0.05, 0.0, 0.05, 0.42, 0.05, 0.05, 0.38])
    clear = Face.from_probabilities((0, 0, 10, 10), [0.05, 0.0, 0.05, 0.62, 0.05, 0.05, 0.18])
    assert close.uncertain and close.emotion == "happy" and close.runner_up == "neutral"
    assert not clear.uncertain
    assert face_record(numbered([close])[0])["uncertain"] is True


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1", "@A1", "\tx", "\rx"])
def test_a_text_cell_a_spreadsheet_would_run_starts_with_an_apostrophe(text):
    assert csv_text(text) == "'" + text
    assert csv_text("happy") == "happy"
