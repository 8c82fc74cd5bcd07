"""Face detection and cropping on real faces (skimage's astronaut and LFW subset) and synthetic images,
with each face finder; the BlazeFace decoding and the turned crops on their own."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from emotion import FACE_SIZE, Box, DetectorSettings, crop_faces, detect_faces
from emotion.faces import (
    FINDER_NAMES,
    LIVE_DETECTOR,
    PHOTO_DETECTOR,
    Detection,
    detector_settings,
    square_box,
)
from emotion.faces.common import block_average, shrink
from scripts import samples

HAAR = DetectorSettings(finder="haar")

ASTRONAUT_FACE_CENTER = (223, 113)  # (x, y) between the eyes and the mouth


def contains(box: Box, point: tuple[int, int]) -> bool:
    return box.x <= point[0] < box.x + box.w and box.y <= point[1] < box.y + box.h


def boxes_of(image: np.ndarray, settings: DetectorSettings = PHOTO_DETECTOR) -> list[Box]:
    return [detection.box for detection in detect_faces(image, settings)]


@pytest.mark.parametrize("finder", FINDER_NAMES)
def test_finds_the_one_face_in_a_portrait(astronaut_rgb, finder):
    detections = detect_faces(astronaut_rgb, DetectorSettings(finder=finder))

    assert len(detections) == 1
    ((box, angle),) = detections
    assert contains(box, ASTRONAUT_FACE_CENTER)
    assert 80 <= box.w <= 130  # brows to chin, not the helmet
    assert all(type(value) is int for value in box)
    assert abs(angle) < 10  # her head leans a little


@pytest.mark.parametrize("finder", FINDER_NAMES)
def test_grayscale_input_gives_the_same_boxes(astronaut_rgb, finder):
    gray = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY)
    settings = DetectorSettings(finder=finder)

    assert detect_faces(gray, settings) == detect_faces(astronaut_rgb, settings)


@pytest.mark.parametrize("finder", FINDER_NAMES)
def test_boxes_are_square_inside_the_image_and_largest_first(group_photo_rgb, finder):
    boxes = boxes_of(group_photo_rgb, DetectorSettings(finder=finder))
    height, width = group_photo_rgb.shape[:2]

    assert len(boxes) >= 10
    for box in boxes:
        assert box.w == box.h > 0
        assert box.x >= 0 and box.x + box.w <= width
        assert box.y >= 0 and box.y + box.h <= height
    areas = [box.area for box in boxes]
    assert areas == sorted(areas, reverse=True)


@pytest.mark.parametrize("finder", FINDER_NAMES)
def test_large_images_are_scanned_small_and_boxes_mapped_back(astronaut_rgb, finder):
    settings = DetectorSettings(finder=finder)
    small_box = boxes_of(astronaut_rgb, settings)[0]
    large = cv2.resize(astronaut_rgb, (2048, 2048), interpolation=cv2.INTER_CUBIC)

    large_box = boxes_of(large, settings)[0]  # BlazeFace also boxes her collar's reflections

    # The same face at 4x the pixels: the side within one pyramid step (scale_factor 1.15)
    # and the centre within a few percent of it.
    assert large_box.w == pytest.approx(4 * small_box.w, rel=0.16)
    assert large_box.x + large_box.w / 2 == pytest.approx(
        4 * (small_box.x + small_box.w / 2), abs=0.05 * large_box.w
    )
    assert large_box.y + large_box.h / 2 == pytest.approx(
        4 * (small_box.y + small_box.h / 2), abs=0.05 * large_box.w
    )


def test_haar_scans_small_pictures_that_are_mostly_face_at_full_size():
    from skimage import data

    images = (data.lfw_subset()[:100] * 255).round().astype(np.uint8)  # 100 people's faces, 25x25
    pictures = [cv2.resize(face, (96, 96), interpolation=cv2.INTER_CUBIC) for face in images]

    found = sum(len(detect_faces(picture, HAAR)) == 1 for picture in pictures)

    # Faces cut as tightly as FER2013's fill their frame, which the cascade likes least: 87 of
    # these 100 are found at full size, 56 if they were shrunk for a 24 px window.
    assert found >= 75


@pytest.mark.parametrize("finder", FINDER_NAMES)
def test_no_faces_in_blank_noise_or_tiny_images(finder):
    rng = np.random.default_rng(0)
    settings = DetectorSettings(finder=finder)

    assert detect_faces(np.full((480, 640, 3), 128, dtype=np.uint8), settings) == []
    assert detect_faces(rng.integers(0, 256, (480, 640), dtype=np.uint8), settings) == []
    assert detect_faces(np.zeros((10, 10, 3), dtype=np.uint8), settings) == []
    assert detect_faces(np.zeros((1, 1), dtype=np.uint8), settings) == []
    assert detect_faces(np.zeros((0, 0), dtype=np.uint8), settings) == []
    assert detect_faces(np.zeros((1, 5000), dtype=np.uint8), settings) == []


@pytest.mark.parametrize("scale", [2, 4])
def test_a_large_photo_gets_no_box_on_patterns_beside_the_face(astronaut_rgb, scale):
    # Enlarged, the photo is searched for faces a twentieth of its side, as small as the
    # reflections in her collar, which the first look finds unsure and the looks after must not confirm.
    large = cv2.resize(astronaut_rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)

    (box,) = boxes_of(large)

    assert contains(box, (ASTRONAUT_FACE_CENTER[0] * scale, ASTRONAUT_FACE_CENTER[1] * scale))


@pytest.mark.parametrize("finder", FINDER_NAMES)
def test_faces_smaller_than_the_minimum_are_not_sought(astronaut_rgb, finder):
    assert detect_faces(astronaut_rgb, DetectorSettings(finder=finder, min_face_pixels=200)) == []
    assert detect_faces(astronaut_rgb, DetectorSettings(finder=finder, min_size_fraction=0.4)) == []


def test_haar_padding_grows_the_box_around_the_same_centre(astronaut_rgb):
    (tight,) = boxes_of(astronaut_rgb, DetectorSettings(finder="haar", padding=0.0))
    (padded,) = boxes_of(astronaut_rgb, DetectorSettings(finder="haar", padding=0.25))

    assert padded.w == pytest.approx(1.5 * tight.w, abs=2)
    assert padded.x + padded.w / 2 == pytest.approx(tight.x + tight.w / 2, abs=1)
    assert padded.y + padded.h / 2 == pytest.approx(tight.y + tight.h / 2, abs=1)


def test_square_box_moves_inside_the_image_rather_than_clipping():
    assert square_box(-10, -5, 40, 40, 100, 80, padding=0.0) == Box(0, 0, 40, 40)
    assert square_box(90, 70, 40, 30, 100, 80, padding=0.0) == Box(60, 40, 40, 40)
    # Larger than the image: as large as fits.
    assert square_box(0, 0, 200, 200, 100, 80, padding=0.0) == Box(20, 0, 80, 80)
    assert square_box(10, 10, 20, 40, 100, 80, padding=0.0) == Box(0, 10, 40, 40)


@pytest.mark.parametrize("finder", FINDER_NAMES)
def test_detection_is_safe_from_several_threads(astronaut_rgb, group_photo_rgb, finder):
    settings = DetectorSettings(finder=finder)
    expected = {
        "astronaut": detect_faces(astronaut_rgb, settings),
        "group": detect_faces(group_photo_rgb, settings),
    }
    results: list[tuple[str, list[Detection]]] = []
    errors: list[BaseException] = []

    def work(name: str, image: np.ndarray) -> None:
        try:
            for _ in range(3):
                results.append((name, detect_faces(image, settings)))
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
    for name, detections in results:
        assert detections == expected[name]


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
        ({"min_score": 1.0}, "min_score"),
        ({"finder": "dlib"}, "Unknown face finder"),
    ],
)
def test_settings_refuse_nonsense(settings, message):
    with pytest.raises(ValueError, match=message):
        DetectorSettings(**settings)


def test_crop_faces_area_resizes_each_upright_box_to_48x48(astronaut_rgb):
    gray = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY)
    detections = [Detection(Box(174, 64, 98, 98)), Detection(Box(0, 0, 24, 24))]

    crops = crop_faces(gray, detections)

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
        crop_faces(np.zeros((50, 50, 3), np.uint8), [Detection(Box(0, 0, 10, 10))])
    with pytest.raises(ValueError, match="outside"):
        crop_faces(np.zeros((50, 50), np.uint8), [Detection(Box(60, 60, 10, 10))])
    with pytest.raises(ValueError, match="outside"):
        crop_faces(np.zeros((50, 50), np.uint8), [Detection(Box(60, 60, 10, 10), 30.0)])


def test_detector_presets_at_each_sensitivity():
    assert detector_settings() == PHOTO_DETECTOR == DetectorSettings()
    assert detector_settings(finder="haar") == HAAR
    assert detector_settings("live") == LIVE_DETECTOR
    strict = detector_settings("photo", "strict")
    sensitive = detector_settings("photo", "sensitive")
    assert strict.min_neighbors > PHOTO_DETECTOR.min_neighbors > sensitive.min_neighbors
    assert strict.scale_factor > PHOTO_DETECTOR.scale_factor > sensitive.scale_factor
    assert strict.min_score > PHOTO_DETECTOR.min_score > sensitive.min_score
    assert detector_settings("photo", min_size_fraction=0.02).min_size_fraction == 0.02
    # A stream never searches for faces below the live preset's minimum, only above it.
    assert detector_settings("live", min_size_fraction=0.02) == LIVE_DETECTOR
    assert detector_settings("live", min_size_fraction=0.3).min_size_fraction == 0.3
    with pytest.raises(ValueError, match="Unknown detector preset"):
        detector_settings("crowd")
    with pytest.raises(ValueError, match="Unknown sensitivity"):
        detector_settings("photo", "Balanced")


# Turned faces and the crops levelled by the eyes --------------------------------------------------


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


@pytest.mark.parametrize("angle", [30, -30])
def test_a_turned_face_is_found_and_its_crop_turned_back_upright(astronaut_rgb, angle):
    gray = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY)
    (upright,) = detect_faces(gray)
    picture = cv2.cvtColor(samples.turned_astronaut(angle), cv2.COLOR_RGB2GRAY)

    (found,) = detect_faces(picture)

    assert contains(found.box, ASTRONAUT_FACE_CENTER)
    # The picture turns counterclockwise on screen: her eye line's angle drops by as much.
    assert found.angle == pytest.approx(upright.angle - angle, abs=6)
    assert found.box.w == pytest.approx(upright.box.w, rel=0.1)
    upright_crop, aligned_crop = crop_faces(gray, [upright])[0], crop_faces(picture, [found])[0]
    unaligned_crop = crop_faces(picture, [Detection(found.box)])[0]
    assert correlation(aligned_crop, upright_crop) > 0.93
    assert np.abs(aligned_crop.astype(int) - upright_crop).mean() < 14  # grey levels
    assert correlation(unaligned_crop, upright_crop) < correlation(aligned_crop, upright_crop) - 0.2


def test_haar_sees_no_face_turned_by_30_degrees():
    assert detect_faces(samples.turned_astronaut(30), HAAR) == []


def test_a_turned_crop_of_a_turned_pattern_is_the_upright_pattern():
    rng = np.random.default_rng(1)
    blobs = rng.integers(0, 256, (12, 12), dtype=np.uint8)
    pattern = cv2.resize(blobs, (96, 96), interpolation=cv2.INTER_CUBIC)
    canvas = np.full((300, 300), 128, np.uint8)
    canvas[102:198, 102:198] = pattern
    turn = cv2.getRotationMatrix2D((150, 150), -25, 1.0)  # clockwise on screen: the angle is +25
    picture = cv2.warpAffine(canvas, turn, (300, 300), flags=cv2.INTER_CUBIC)

    (crop,) = crop_faces(picture, [Detection(Box(102, 102, 96, 96), 25.0)])

    expected = cv2.resize(pattern, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)
    assert np.abs(crop.astype(int) - expected)[4:-4, 4:-4].mean() < 6
    assert correlation(crop, expected) > 0.97


def test_block_average_is_the_mean_of_each_whole_block():
    image = np.random.default_rng(2).integers(0, 256, (103, 98), dtype=np.uint8)

    averaged = block_average(image, 5)

    assert averaged.shape == (20, 19)  # the last 3 rows and 3 columns dropped
    means = image[:100, :95].reshape(20, 5, 19, 5).mean(axis=(1, 3))
    assert np.abs(averaged - means).max() <= 0.5
    np.testing.assert_array_equal(block_average(image, 1), image)
    assert block_average(image[:4, :4], 5).shape == (0, 0)


@pytest.mark.parametrize("size", [(49, 37), (64, 48), (213, 160), (640, 480)])
def test_shrink_averages_to_the_size_asked_keeping_where_things_are(size):
    image = np.full((480, 640), 40, np.uint8)
    image[300:340, 100:140] = 240  # a bright square 40 px wide

    shrunk = shrink(image, size)

    assert shrunk.shape == (size[1], size[0])
    scale_x, scale_y = size[0] / 640, size[1] / 480
    ys, xs = np.nonzero(shrunk > 140)
    assert abs(xs.mean() - 119.5 * scale_x) <= 1.0 and abs(ys.mean() - 319.5 * scale_y) <= 1.0
    # The square's brightness is averaged, not lost or aliased: the total light is kept.
    assert (shrunk.astype(float) - 40).sum() * (640 * 480) / (size[0] * size[1]) == pytest.approx(
        200 * 40 * 40, rel=0.05
    )


def test_crops_of_faces_at_the_edge_repeat_the_edge():
    gray = np.zeros((100, 100), np.uint8)
    gray[:, 50:] = 200

    (crop,) = crop_faces(gray, [Detection(Box(70, 70, 30, 30), 45.0)])

    assert crop.shape == (FACE_SIZE, FACE_SIZE)
    assert crop.min() >= 0 and crop.max() == 200


@pytest.mark.parametrize("finder", FINDER_NAMES)
def test_odd_pictures_give_faces_or_none_never_an_error(astronaut_rgb, finder):
    settings = DetectorSettings(finder=finder)
    gray = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY)
    pictures = [
        gray[60:300, 200:512],  # her face cut by the picture's left edge
        np.ascontiguousarray(np.rot90(gray)),  # a quarter turn
        np.tile(cv2.resize(gray, (128, 128), interpolation=cv2.INTER_AREA), (4, 6)),  # 24 small faces
        cv2.resize(gray, (40, 40), interpolation=cv2.INTER_AREA),  # one tiny face
        np.ascontiguousarray(gray[:3, :]),  # a strip
    ]
    for picture in pictures:
        detections = detect_faces(picture, settings)
        crops = crop_faces(picture, detections)
        assert crops.shape == (len(detections), FACE_SIZE, FACE_SIZE)


# BlazeFace's decoding ------------------------------------------------------------------------------


def test_anchors_follow_mediapipes_grids():
    from emotion.faces.blazeface import SHORT_RANGE, AnchorSpec, generate_anchors

    short = generate_anchors(SHORT_RANGE, 128, 128)
    full = generate_anchors(AnchorSpec(192, (4,), 0.0), 192, 192)  # the full-range model's

    # Short range: a 16x16 grid (stride 8) with 2 anchors a cell, then an 8x8 grid (three
    # layers of stride 16) with 6, as MediaPipe's 896; full range: a 48x48 grid with 1.
    assert short.shape == (16 * 16 * 2 + 8 * 8 * 6, 2) == (896, 2)
    assert full.shape == (48 * 48, 2)
    np.testing.assert_allclose(short[:4], [(4, 4), (4, 4), (12, 4), (12, 4)])
    np.testing.assert_allclose(short[512:519], [(8, 8)] * 6 + [(24, 8)])
    np.testing.assert_allclose(full[[0, 1, 48]], [(2, 2), (6, 2), (2, 6)])
    # A wider input widens the grids, row by row.
    wide = generate_anchors(SHORT_RANGE, 128, 192)
    assert wide.shape == (16 * 24 * 2 + 8 * 12 * 6, 2)
    np.testing.assert_allclose(wide[[46, 48]], [(188, 4), (4, 12)])


def test_decode_places_boxes_and_keypoints_about_their_anchors():
    from emotion.faces.blazeface import decode

    anchors = np.array([(10.0, 20.0), (50.0, 60.0), (90.0, 90.0)], np.float32)
    regressors = np.zeros((3, 16), np.float32)
    regressors[0, :4] = (1.0, -2.0, 8.0, 6.0)  # centre offset (x, y), width, height
    regressors[0, 4:6] = (-3.0, -1.0)  # the right eye
    regressors[1, 2:4] = (0.0, 4.0)  # no width: not a box
    logits = np.array([2.0, 3.0, -2.0], np.float32)  # sigmoid 0.88, 0.95, 0.12

    detections, scores = decode(regressors, logits, anchors, min_score=0.5)

    assert detections.shape == (1, 8, 2)
    np.testing.assert_allclose(detections[0, :2], [(7.0, 15.0), (15.0, 21.0)])
    np.testing.assert_allclose(detections[0, 2], (7.0, 19.0))
    np.testing.assert_allclose(detections[0, 3:], [(10.0, 20.0)] * 5)
    np.testing.assert_allclose(scores, [1 / (1 + np.exp(-2.0))], rtol=1e-6)
    # Huge logits are clipped rather than overflowing.
    _, scores = decode(regressors[:1], np.array([1e6], np.float32), anchors[:1], min_score=0.5)
    assert np.isfinite(scores).all()


def test_weighted_suppression_blends_overlapping_detections_by_score():
    from emotion.faces.blazeface import weighted_suppression

    def detection(x_min: float, y_min: float, side: float) -> np.ndarray:
        points = np.full((8, 2), (x_min + side / 2, y_min + side / 2), np.float32)
        points[:2] = [(x_min, y_min), (x_min + side, y_min + side)]
        return points

    detections = np.stack([detection(0, 0, 10), detection(2, 0, 10), detection(50, 50, 10)])
    scores = np.array([0.6, 0.9, 0.7], np.float32)

    faces = weighted_suppression(detections, scores)

    assert [score for _, score in faces] == pytest.approx([0.9, 0.7])
    blended, _ = faces[0]
    assert blended[0, 0] == pytest.approx((0.6 * 0 + 0.9 * 2) / 1.5)
    np.testing.assert_allclose(faces[1][0], detections[2])


def close_up(rgb: np.ndarray, box: Box, factor: int, span: float, cut: float) -> tuple[np.ndarray, Box]:
    """The picture enlarged `factor` times and cut to 4:3 around the face in `box` so that the face
    spans `span` of its height (over 1: the face is cut off above and below), moved right by `cut`
    of the face's side (the face cut off on the left); and where the face's box now lies."""
    enlarged = cv2.resize(rgb, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
    side = box.w * factor
    height = round(side / span)
    width = round(height * 4 / 3)
    left = max(0, round((box.x + box.w / 2) * factor - width / 2 + cut * side))
    top = max(0, round((box.y + box.h / 2) * factor - height / 2))
    picture = np.ascontiguousarray(enlarged[top : top + height, left : left + width])
    return picture, Box(box.x * factor - left, box.y * factor - top, side, side)


def iou(first: Box, second: Box) -> float:
    width = max(0, min(first.x + first.w, second.x + second.w) - max(first.x, second.x))
    height = max(0, min(first.y + first.h, second.y + second.h) - max(first.y, second.y))
    return width * height / (first.area + second.area - width * height)


@pytest.mark.parametrize("settings", [PHOTO_DETECTOR, LIVE_DETECTOR], ids=["photo", "live"])
@pytest.mark.parametrize(
    ("factor", "span", "cut"),
    [(6, 0.55, 0.0), (8, 0.9, 0.0), (6, 1.1, 0.0), (6, 0.7, 0.3), (3, 0.9, 0.3)],
    ids=["over-half", "filling", "cut-above-and-below", "cut-on-the-left", "small-and-cut"],
)
def test_a_face_filling_the_picture_is_found_with_its_box(astronaut_rgb, settings, factor, span, cut):
    (found,) = boxes_of(astronaut_rgb)
    picture, expected = close_up(astronaut_rgb, found, factor, span, cut)
    boxes = boxes_of(picture, settings)
    assert len(boxes) == 1, boxes
    assert iou(boxes[0], expected) > 0.8, (boxes[0], expected)
