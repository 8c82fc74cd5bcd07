"""Drawing faces: colours, sizes that follow the image, labels that stay inside, both colour orders."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from emotion import EMOTIONS, Box, Face, annotate
from emotion.draw import (
    EMOTION_COLORS,
    MIN_FONT_SCALE,
    I420Canvas,
    annotate_frame,
    draw_banner,
    draw_face,
    draw_face_box,
    draw_live_overlay,
    emotion_color,
    face_label,
    style_for,
    text_color_on,
)


def make_face(box: Box, emotion: str = "happy", confidence: float = 0.87) -> Face:
    probabilities = np.full(len(EMOTIONS), (1.0 - confidence) / (len(EMOTIONS) - 1), dtype=np.float32)
    probabilities[EMOTIONS.index(emotion)] = confidence
    return Face(box, probabilities, emotion)


def gray_image(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), 128, dtype=np.uint8)


def test_one_distinct_colour_per_emotion():
    assert tuple(EMOTION_COLORS) == EMOTIONS
    assert len(set(EMOTION_COLORS.values())) == len(EMOTIONS)
    for color in EMOTION_COLORS.values():
        assert len(color) == 3 and all(0 <= channel <= 255 for channel in color)


def test_colours_in_both_orders():
    assert emotion_color("angry", "rgb") == (213, 94, 0)
    assert emotion_color("angry", "bgr") == (0, 94, 213)
    with pytest.raises(ValueError, match="order"):
        emotion_color("angry", "hsv")


def test_label_text_contrasts_with_its_background():
    assert text_color_on(EMOTION_COLORS["happy"]) == (0, 0, 0)  # yellow
    assert text_color_on(EMOTION_COLORS["sad"]) == (255, 255, 255)  # blue


def test_face_label_reads_emotion_and_percent():
    assert face_label(make_face(Box(0, 0, 10, 10), "happy", 0.87)) == "happy 87%"
    assert face_label(make_face(Box(0, 0, 10, 10), "surprise", 1.0)) == "surprise 100%"
    assert face_label(make_face(Box(0, 0, 10, 10), "happy", 0.87)._replace(id=3)) == "#3 happy 87%"


def test_an_uncertain_face_is_labelled_with_both_readings():
    face = Face.from_probabilities((0, 0, 10, 10), [0.05, 0.0, 0.05, 0.42, 0.05, 0.05, 0.38])
    assert face_label(face) == "happy or neutral?"


def test_sizes_grow_with_the_image_and_stay_legible_when_small():
    styles = [style_for((side, side, 3)) for side in (200, 640, 1280, 4000)]

    assert styles[0].font_scale >= MIN_FONT_SCALE
    for smaller, larger in itertools.pairwise(styles):
        assert smaller.font_scale <= larger.font_scale
        assert smaller.line_thickness <= larger.line_thickness
    assert styles[-1].font_scale >= 3 and styles[-1].line_thickness >= 8


@pytest.mark.parametrize("side", [200, 640, 4000])
def test_label_height_is_readable_and_proportionate(side):
    image = gray_image(side, side)
    box = Box(side // 4, side // 2, side // 4, side // 4)

    _, top, _, bottom = draw_face(image, make_face(box))

    label_height = bottom - top
    assert label_height >= 14  # ~9 px capitals plus margins at 200 px
    assert label_height <= max(0.12 * side, 40)
    assert bottom == box.y  # above the box


def test_label_goes_inside_the_box_when_the_box_touches_the_top():
    image = gray_image(300, 400)
    box = Box(100, 0, 120, 120)

    left, top, _, bottom = draw_face(image, make_face(box))

    assert top == 0 and bottom <= box.h
    assert left == box.x


def test_label_stays_inside_at_the_right_and_bottom_edges():
    image = gray_image(200, 200)
    box = Box(170, 170, 30, 30)

    left, top, right, bottom = draw_face_box(image, box, "surprise 100%", (230, 159, 0), confidence=0.5)

    assert left >= 0 and right <= 200
    assert top >= 0 and bottom <= 200


def test_box_label_and_bar_are_drawn_in_the_emotions_colour():
    image = gray_image(400, 400)
    box = Box(100, 150, 200, 200)

    draw_face(image, make_face(box, "sad", confidence=0.5))

    blue = np.array(EMOTION_COLORS["sad"])
    style = style_for(image.shape)
    assert (image[250, 100] == blue).all()  # the box's left edge
    assert (image[250, 299] == blue).all()  # the box's right edge
    # The confidence bar under the box, half filled.
    bar_row = 350 + style.bar_height // 2
    assert (image[bar_row, 120] == blue).all()
    assert not (image[bar_row, 280] == blue).all()


def test_confidence_bar_goes_inside_the_box_at_the_bottom_edge():
    image = gray_image(400, 400)
    box = Box(100, 200, 200, 200)

    draw_face(image, make_face(box, "sad", confidence=0.5))

    bar_row = 399 - style_for(image.shape).bar_height // 2
    assert (image[bar_row, 120] == np.array(EMOTION_COLORS["sad"])).all()


def test_drawing_on_bgr_is_drawing_on_rgb_mirrored():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    face = make_face(Box(50, 60, 150, 150), "angry", 0.6)

    draw_face(rgb, face, "rgb")
    draw_face(bgr, face, "bgr")
    draw_banner(rgb, "2 faces")
    draw_banner(bgr, "2 faces")

    np.testing.assert_array_equal(bgr[..., ::-1], rgb)


def test_banner_darkens_only_its_strip_and_fits_long_text():
    image = gray_image(240, 320)

    draw_banner(image, "a banner far too long to fit on one line of a small image at this size")

    assert image[0].mean() < 128  # darkened, with white text
    assert (image[-1] == 128).all()


def test_annotate_returns_a_new_image_and_leaves_the_input_alone(astronaut_rgb):
    original = astronaut_rgb.copy()
    faces = [make_face(Box(174, 64, 98, 98)), make_face(Box(10, 10, 50, 50), "fear", 0.4)]

    annotated = annotate(astronaut_rgb, faces)

    np.testing.assert_array_equal(astronaut_rgb, original)
    assert annotated.shape == astronaut_rgb.shape and annotated.dtype == np.uint8
    assert (annotated != astronaut_rgb).any()
    np.testing.assert_array_equal(annotate(astronaut_rgb, []), astronaut_rgb)


def test_a_video_frame_gets_its_faces_in_bgr_and_a_status_strip():
    frame = gray_image(240, 320)
    face = make_face(Box(100, 80, 100, 100), "angry", 0.6)._replace(id=1)

    annotated = annotate_frame(frame, [face], fps=25.0)

    np.testing.assert_array_equal(frame, 128)  # the input is left alone
    assert (annotated[130, 100] == emotion_color("angry", "bgr")).all()  # the box's left edge
    assert annotated[0].mean() < 128 and (annotated[-1] == 128).all()  # the strip, at the top only
    assert annotate_frame(frame, []).mean() < frame.mean()  # "No face in view"
    np.testing.assert_array_equal(annotate_frame(frame, [face]), annotate(frame, [face], "bgr"))


def test_annotate_takes_grayscale_and_refuses_other_arrays():
    assert annotate(np.zeros((50, 60), np.uint8), []).shape == (50, 60, 3)
    with pytest.raises(ValueError, match="RGB"):
        annotate(np.zeros((50, 60, 4), np.uint8), [])


def test_primitives_refuse_arrays_they_cannot_draw_on_in_place():
    face = make_face(Box(0, 0, 10, 10))
    with pytest.raises(ValueError, match="contiguous"):
        draw_face(gray_image(50, 50)[:, ::2], face)
    with pytest.raises(ValueError, match="uint8"):
        draw_face(np.zeros((50, 50, 3), np.float32), face)


def test_boxes_partly_outside_the_image_are_drawn_clipped():
    image = gray_image(100, 100)

    for box in (Box(-20, -20, 60, 60), Box(90, 95, 60, 60)):
        left, top, right, bottom = draw_face_box(image, box, "happy 50%", (240, 228, 66), confidence=0.5)

        assert 0 <= left < right <= 100 and 0 <= top < bottom <= 100


def i420_planes(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A BGR picture as the video-range Y, U and V planes of yuv420p."""
    height, width = bgr.shape[:2]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).reshape(-1)  # Y (H*W), then U and V (H*W/4 each)
    luma, chroma = height * width, height * width // 4
    return (
        i420[:luma].reshape(height, width),
        i420[luma : luma + chroma].reshape(height // 2, width // 2),
        i420[luma + chroma :].reshape(height // 2, width // 2),
    )


def i420_to_bgr(planes) -> np.ndarray:
    return cv2.cvtColor(
        np.concatenate([plane.reshape(-1) for plane in planes]).reshape(-1, planes[0].shape[1]),
        cv2.COLOR_YUV2BGR_I420,
    )


def test_the_live_overlay_on_yuv420p_planes_looks_as_it_does_on_bgr(astronaut_rgb):
    bgr = np.ascontiguousarray(astronaut_rgb[:480, :400, ::-1])
    planes = i420_planes(bgr)
    faces = [make_face(Box(174, 64, 98, 98), "sad", 0.6)._replace(id=1)]
    expected = annotate_frame(i420_to_bgr(planes), faces, fps=25.0)

    draw_live_overlay(I420Canvas(*planes), faces, fps=25.0)

    shown = i420_to_bgr(planes)
    drawn = np.abs(expected.astype(int) - i420_to_bgr(i420_planes(bgr))).mean()
    assert np.abs(shown.astype(int) - expected).mean() < 0.2 * drawn  # the same overlay, give or take chroma
    np.testing.assert_allclose(shown[120, 175], emotion_color("sad", "bgr"), atol=12)  # the box's left edge
    assert (
        shown[:10].mean() < 0.6 * bgr[:10].mean()
        and (shown[-40:] == i420_to_bgr(i420_planes(bgr))[-40:]).all()
    )


def test_yuv420p_colours_follow_the_pictures_range():
    video, full = (
        I420Canvas(
            np.zeros((4, 4), np.uint8), np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8), full_range=f
        )
        for f in (False, True)
    )
    for canvas, black, white in ((video, 16, 235), (full, 0, 255)):
        canvas.rectangle((0, 0), (3, 1), (255, 255, 255), cv2.FILLED)
        canvas.rectangle((0, 2), (3, 3), (0, 0, 0), cv2.FILLED)
        y, u, v = canvas.planes
        assert (y[:2] == white).all() and (y[2:] == black).all() and (u == 128).all() and (v == 128).all()
    with pytest.raises(ValueError, match="chroma"):
        I420Canvas(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8))
