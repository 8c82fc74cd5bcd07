"""The photo pipeline: decode -> detect -> crop -> one batched classification -> annotate, on real faces.

Which emotion a face shows is the model's accuracy (model/MODEL_CARD.md), not the pipeline's:
the tests check the shape and consistency of the results, never a particular emotion.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from emotion import (
    EMOTIONS,
    Box,
    Detection,
    DetectorSettings,
    Face,
    InvalidImage,
    analyze_image,
    analyze_photo,
    annotate,
    classify_faces,
    detect_faces,
    photo_json,
    photo_record,
    pipeline,
    process_photo,
)
from emotion.pipeline import PREVIEW_MAX_SIDE, annotated_png


class CountingClassifier:
    """Wraps a classifier and records the batch size of every predict_proba call."""

    def __init__(self, classifier):
        self.classifier = classifier
        self.batch_sizes: list[int] = []

    def predict_proba(self, faces: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(faces))
        return self.classifier.predict_proba(faces)


def check_face(face: Face) -> None:
    assert isinstance(face.box, Box)
    assert face.probabilities.shape == (len(EMOTIONS),)
    assert face.probabilities.dtype == np.float32
    assert face.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert face.emotion == EMOTIONS[int(np.argmax(face.probabilities))]
    assert face.confidence == pytest.approx(float(face.probabilities.max()))


def test_one_face_in_a_portrait(astronaut_rgb, classifier):
    faces = analyze_image(astronaut_rgb, classifier)

    assert len(faces) == 1
    check_face(faces[0])
    assert faces[0].box == detect_faces(astronaut_rgb)[0].box


def test_every_face_in_a_group_photo_in_one_model_call(group_photo_rgb, classifier):
    counting = CountingClassifier(classifier)

    faces = analyze_image(group_photo_rgb, counting)

    assert len(faces) >= 10
    assert counting.batch_sizes == [len(faces)]
    for face in faces:
        check_face(face)
    areas = [face.box.area for face in faces]
    assert areas == sorted(areas, reverse=True)


def test_no_face_gives_an_empty_list_without_calling_the_model(classifier):
    counting = CountingClassifier(classifier)

    assert analyze_image(np.full((480, 640, 3), 200, dtype=np.uint8), counting) == []
    assert counting.batch_sizes == []


def test_grayscale_images_work_too(astronaut_rgb, classifier):
    gray = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY)

    (from_gray,) = analyze_image(gray, classifier)
    (from_rgb,) = analyze_image(astronaut_rgb, classifier)

    assert from_gray.box == from_rgb.box
    np.testing.assert_allclose(from_gray.probabilities, from_rgb.probabilities, atol=1e-6)


def test_settings_reach_the_detector(astronaut_rgb, classifier):
    assert analyze_image(astronaut_rgb, classifier, DetectorSettings(min_face_pixels=300)) == []


def test_classify_faces_keeps_the_boxes_order(astronaut_rgb, classifier):
    gray = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY)
    boxes = [Box(0, 0, 100, 100), Box(174, 64, 98, 98), Box(400, 400, 60, 60)]

    detections = [Detection(box, angle) for box, angle in zip(boxes, (0, 20, -5), strict=True)]

    faces = classify_faces(gray, detections, classifier)

    assert [face.box for face in faces] == boxes
    for face in faces:
        check_face(face)
    assert classify_faces(gray, [], classifier) == []


def test_without_a_classifier_the_default_is_loaded_once(astronaut_rgb, classifier, monkeypatch):
    loads = []

    def fake_load_classifier(path=None):
        loads.append(path)
        return classifier

    monkeypatch.setattr("emotion.classifier.load_classifier", fake_load_classifier)
    monkeypatch.setattr(pipeline, "_default_classifier", None)

    first = analyze_image(astronaut_rgb)
    second = analyze_image(astronaut_rgb)

    assert loads == [None]
    assert len(first) == len(second) == 1
    np.testing.assert_array_equal(first[0].probabilities, second[0].probabilities)


def test_analyze_refuses_arrays_that_are_not_images(classifier):
    with pytest.raises(ValueError, match="image must be"):
        analyze_image(np.zeros((10, 10, 2), np.uint8), classifier)


def test_a_photo_file_gives_the_same_faces_and_json_as_its_pixels(astronaut_rgb, classifier):
    png = io.BytesIO()
    Image.fromarray(astronaut_rgb).save(png, format="PNG")

    faces = analyze_photo(png.getvalue(), classifier)
    record = photo_json("astronaut.png", png.getvalue(), classifier)

    (expected,) = analyze_image(astronaut_rgb, classifier)
    assert [face.box for face in faces] == [expected.box]
    np.testing.assert_array_equal(faces[0].probabilities, expected.probabilities)
    assert record == photo_record("astronaut.png", faces, "blazeface")
    haar = DetectorSettings(finder="haar")
    assert photo_json("astronaut.png", png.getvalue(), classifier, haar)["detector"] == "haar"


def test_process_photo_gives_a_preview_and_annotated_png_the_full_size_picture(astronaut_rgb, classifier):
    png = io.BytesIO()
    Image.fromarray(astronaut_rgb).save(png, format="PNG")

    faces, preview, size = process_photo(png.getvalue(), classifier)

    assert size == (512, 512)
    assert [face.box for face in faces] == [face.box for face in analyze_image(astronaut_rgb, classifier)]
    shown = np.asarray(Image.open(io.BytesIO(preview)))  # JPEG: close to, not equal to, the drawing
    assert np.mean(np.abs(shown.astype(int) - annotate(astronaut_rgb, faces))) < 3
    full = np.asarray(Image.open(io.BytesIO(annotated_png(png.getvalue(), faces))))
    np.testing.assert_array_equal(full, annotate(astronaut_rgb, faces))


def test_a_large_photo_is_previewed_small_with_the_faces_where_they_are(astronaut_rgb, classifier):
    large = cv2.resize(astronaut_rgb, (4000, 4000), interpolation=cv2.INTER_CUBIC)  # 16 megapixels
    jpeg = io.BytesIO()
    Image.fromarray(large).save(jpeg, format="JPEG", quality=95)

    faces, preview, size = process_photo(jpeg.getvalue(), classifier)

    assert size == (4000, 4000)  # the photo's, in the boxes' pixels
    assert faces[0].box.w > PREVIEW_MAX_SIDE / 2  # hers, the largest, in the photo's own pixels
    shown = Image.open(io.BytesIO(preview))
    assert shown.size == (PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE)
    assert len(preview) < len(jpeg.getvalue()) / 4
    scale = PREVIEW_MAX_SIDE / 4000
    small = cv2.resize(large, shown.size, interpolation=cv2.INTER_AREA)
    boxed = [face._replace(box=Box(*(round(value * scale) for value in face.box))) for face in faces]
    assert np.mean(np.abs(np.asarray(shown).astype(int) - annotate(small, boxed))) < 3


def test_a_file_that_is_not_a_photo_gives_its_reason_in_the_json(classifier):
    with pytest.raises(InvalidImage):
        analyze_photo(b"not a photo", classifier)
    record = photo_json("notes.txt", b"not a photo", classifier)
    assert record["file"] == "notes.txt" and record["faces"] == []
    assert record["error"].startswith("This file is not an image")
