"""Face detection and cropping on real faces (skimage's astronaut and LFW subset) and synthetic images."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from emotion import FACE_SIZE, Box, DetectorSettings, crop_faces, detect_faces
from emotion.faces import LIVE_DETECTOR, PHOTO_DETECTOR, detector_settings, square_box

ASTRONAUT_FACE_CENTER = (223, 113)  # (x, y) between the eyes and the mouth


def contains(box: Box, point: tuple[int, int]) -> bool:
    return box.x <= point[0] < box.x + box.w and box.y <= point[1] < box.y + box.h


def test_finds_the_one_face_in_a_portrait(astronaut_rgb):
    boxes = detect_faces(astronaut_rgb)

    assert len(boxes) == 1
    (box,) = boxes
    assert contains(box, ASTRONAUT_FACE_CENTER)
    assert 80 <= box.w <= 130  # brows to chin, not the helmet
    assert all(type(value) is int for value in box)


def test_grayscale_input_gives_the_same_boxes(astronaut_rgb):
    gray = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY)

    assert detect_faces(gray) == detect_faces(astronaut_rgb)


def test_boxes_are_square_inside_the_image_and_largest_first(group_photo_rgb):
    boxes = detect_faces(group_photo_rgb)
    height, width = group_photo_rgb.shape[:2]

    assert len(boxes) >= 10
    for box in boxes:
        assert box.w == box.h > 0
        assert box.x >= 0 and box.x + box.w <= width
        assert box.y >= 0 and box.y + box.h <= height
    areas = [box.area for box in boxes]
    assert areas == sorted(areas, reverse=True)


def test_large_images_are_scanned_small_and_boxes_mapped_back(astronaut_rgb):
    small_box = detect_faces(astronaut_rgb)[0]
    large = cv2.resize(astronaut_rgb, (2048, 2048), interpolation=cv2.INTER_CUBIC)

    (large_box,) = detect_faces(large)

    # The same face at 4x the pixels: the side within one pyramid step (scale_factor 1.15)
    # and the centre within a few percent of it.
    assert large_box.w == pytest.approx(4 * small_box.w, rel=0.16)
    assert large_box.x + large_box.w / 2 == pytest.approx(
        4 * (small_box.x + small_box.w / 2), abs=0.05 * large_box.w
    )
    assert large_box.y + large_box.h / 2 == pytest.approx(
        4 * (small_box.y + small_box.h / 2), abs=0.05 * large_box.w
    )


def test_small_pictures_that_are_mostly_face_are_scanned_at_full_size():
    from skimage import data

    images = (data.lfw_subset()[:100] * 255).round().astype(np.uint8)  # 100 people's faces, 25x25
    pictures = [cv2.resize(face, (96, 96), interpolation=cv2.INTER_CUBIC) for face in images]

    found = sum(len(detect_faces(picture)) == 1 for picture in pictures)

    # Faces cut as tightly as FER2013's fill their frame, which the cascade likes least: 87 of
    # these 100 are found at full size, 56 if they were shrunk for a 24 px window.
    assert found >= 75


def test_no_faces_in_blank_noise_or_tiny_images():
    rng = np.random.default_rng(0)

    assert detect_faces(np.full((480, 640, 3), 128, dtype=np.uint8)) == []
    assert detect_faces(rng.integers(0, 256, (480, 640), dtype=np.uint8)) == []
    assert detect_faces(np.zeros((10, 10, 3), dtype=np.uint8)) == []
    assert detect_faces(np.zeros((1, 1), dtype=np.uint8)) == []


def test_faces_smaller_than_the_minimum_are_not_sought(astronaut_rgb):
    assert detect_faces(astronaut_rgb, DetectorSettings(min_face_pixels=200)) == []
    assert detect_faces(astronaut_rgb, DetectorSettings(min_size_fraction=0.4)) == []


def test_padding_grows_the_box_around_the_same_centre(astronaut_rgb):
    (tight,) = detect_faces(astronaut_rgb, DetectorSettings(padding=0.0))
    (padded,) = detect_faces(astronaut_rgb, DetectorSettings(padding=0.25))

    assert padded.w == pytest.approx(1.5 * tight.w, abs=2)
    assert padded.x + padded.w / 2 == pytest.approx(tight.x + tight.w / 2, abs=1)
    assert padded.y + padded.h / 2 == pytest.approx(tight.y + tight.h / 2, abs=1)


def test_square_box_moves_inside_the_image_rather_than_clipping():
    assert square_box(-10, -5, 40, 40, 100, 80, padding=0.0) == Box(0, 0, 40, 40)
    assert square_box(90, 70, 40, 30, 100, 80, padding=0.0) == Box(60, 40, 40, 40)
    # Larger than the image: as large as fits.
    assert square_box(0, 0, 200, 200, 100, 80, padding=0.0) == Box(20, 0, 80, 80)
    assert square_box(10, 10, 20, 40, 100, 80, padding=0.0) == Box(0, 10, 40, 40)


def test_detection_is_safe_from_several_threads(astronaut_rgb, group_photo_rgb):
    expected = {"astronaut": detect_faces(astronaut_rgb), "group": detect_faces(group_photo_rgb)}
    results: list[tuple[str, list[Box]]] = []
    errors: list[BaseException] = []

    def work(name: str, image: np.ndarray) -> None:
        try:
            for _ in range(3):
                results.append((name, detect_faces(image)))
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [
        threading.Thread(target=work, args=(name, image))
        for name, image in [("astronaut", astronaut_rgb), ("group", group_photo_rgb)] * 2
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(results) == 12
    for name, boxes in results:
        assert boxes == expected[name]


@pytest.mark.parametrize(
    "image",
    [np.zeros((100, 100, 4), np.uint8), np.zeros((100, 100), np.float32), np.zeros(100, np.uint8)],
    ids=["four-channels", "float", "one-dimensional"],
)
def test_detect_refuses_arrays_that_are_not_images(image):
    with pytest.raises(ValueError, match="image must be"):
        detect_faces(image)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"scale_factor": 1.0}, "scale_factor"),
        ({"min_neighbors": -1}, "min_neighbors"),
        ({"min_size_fraction": 1.5}, "min_size_fraction"),
        ({"min_face_pixels": 0}, "min_face_pixels"),
        ({"max_detection_side": 10}, "max_detection_side"),
        ({"padding": -0.1}, "padding"),
    ],
)
def test_settings_refuse_nonsense(settings, message):
    with pytest.raises(ValueError, match=message):
        DetectorSettings(**settings)


def test_crop_faces_area_resizes_each_box_to_48x48(astronaut_rgb):
    gray = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY)
    boxes = [Box(174, 64, 98, 98), Box(0, 0, 24, 24)]

    crops = crop_faces(gray, boxes)

    assert crops.shape == (2, FACE_SIZE, FACE_SIZE)
    assert crops.dtype == np.uint8
    expected = cv2.resize(gray[64:162, 174:272], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(crops[0], expected)


def test_crop_faces_of_no_boxes_is_an_empty_batch():
    crops = crop_faces(np.zeros((50, 50), np.uint8), [])

    assert crops.shape == (0, FACE_SIZE, FACE_SIZE)
    assert crops.dtype == np.uint8


def test_crop_faces_refuses_colour_images_and_boxes_outside():
    with pytest.raises(ValueError, match="grayscale"):
        crop_faces(np.zeros((50, 50, 3), np.uint8), [Box(0, 0, 10, 10)])
    with pytest.raises(ValueError, match="outside"):
        crop_faces(np.zeros((50, 50), np.uint8), [Box(60, 60, 10, 10)])


def test_detector_presets_at_each_sensitivity():
    assert detector_settings() == PHOTO_DETECTOR == DetectorSettings()
    assert detector_settings("live") == LIVE_DETECTOR
    strict = detector_settings("photo", "strict")
    sensitive = detector_settings("photo", "sensitive")
    assert strict.min_neighbors > PHOTO_DETECTOR.min_neighbors > sensitive.min_neighbors
    assert strict.scale_factor > PHOTO_DETECTOR.scale_factor > sensitive.scale_factor
    assert detector_settings("photo", min_size_fraction=0.02).min_size_fraction == 0.02
    # A stream never searches for faces below the live preset's minimum, only above it.
    assert detector_settings("live", min_size_fraction=0.02) == LIVE_DETECTOR
    assert detector_settings("live", min_size_fraction=0.3).min_size_fraction == 0.3
    with pytest.raises(ValueError, match="Unknown detector preset"):
        detector_settings("crowd")
    with pytest.raises(ValueError, match="Unknown sensitivity"):
        detector_settings("photo", "Balanced")
