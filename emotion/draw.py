"""Draw faces and their emotions on images: the photo result and the live video overlay.

Every primitive draws in place on a `Canvas`: a uint8 (H, W, 3) array in either colour order
(`ArrayCanvas`), or the planes of a yuv420p video frame (`I420Canvas`). Given a bare array, a
primitive takes colours in the array's own order (`emotion_color(emotion, order="bgr")` for
OpenCV/video frames); a canvas takes them in RGB.
Line widths and text scale with the image, so labels read the same on a 200 px thumbnail and a
4000 px photo.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import cv2
import numpy as np

from emotion.faces import Box
from emotion.results import Face

ColorOrder = Literal["rgb", "bgr"]
Color = tuple[int, int, int]
Point = tuple[int, int]  # (x, y) pixels

# Okabe & Ito's palette, chosen to stay distinct for the common forms of colour blindness;
# exactly one colour per emotion, RGB.
EMOTION_COLORS: dict[str, Color] = {
    "angry": (213, 94, 0),  # vermillion
    "disgust": (0, 158, 115),  # bluish green
    "fear": (204, 121, 167),  # reddish purple
    "happy": (240, 228, 66),  # yellow
    "sad": (0, 114, 178),  # blue
    "surprise": (230, 159, 0),  # orange
    "neutral": (86, 180, 233),  # sky blue
}

BLACK: Color = (0, 0, 0)
WHITE: Color = (255, 255, 255)
BAR_BACKGROUND: Color = (64, 64, 64)  # the unfilled part of a confidence bar
BANNER_OPACITY = 0.6  # of the black status strip over a video frame
NO_FACE_TEXT = "No face in view"
FONT = cv2.FONT_HERSHEY_SIMPLEX
# Sizes relative to the image's longer side, with floors that keep a 200 px image legible:
LINE_PER_PIXEL = 1 / 320  # box line: 2 px at 640, 12 px at 4000
FONT_SCALE_PER_PIXEL = 1 / 1100  # text: ~13 px capitals at 640, ~80 px at 4000
MIN_FONT_SCALE = 0.4  # ~9 px capitals: the smallest Hershey text that still reads
# BT.601 RGB (0-255) -> YCbCr as (matrix, offset): video range (luma 16-235, chroma 16-240), as
# WebRTC and most video carry it, and full range (0-255), as JPEG does.
VIDEO_RANGE_YCBCR = (
    np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255,
    np.array([16.0, 128.0, 128.0]),
)
FULL_RANGE_YCBCR = (
    np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]),
    np.array([0.0, 128.0, 128.0]),
)


@dataclass(frozen=True)
class DrawStyle:
    """Pixel sizes for one image size; see `style_for`."""

    line_thickness: int
    font_scale: float
    text_thickness: int
    margin: int  # around label text, pixels
    bar_height: int  # confidence bar, pixels


def style_for(shape: tuple[int, ...]) -> DrawStyle:
    """The style for an image of this shape ((H, W) or (H, W, C))."""
    longer_side = max(shape[0], shape[1])
    font_scale = max(MIN_FONT_SCALE, longer_side * FONT_SCALE_PER_PIXEL)
    line_thickness = max(1, round(longer_side * LINE_PER_PIXEL))
    return DrawStyle(
        line_thickness=line_thickness,
        font_scale=font_scale,
        text_thickness=max(1, round(font_scale * 1.6)),
        margin=max(2, round(font_scale * 5)),
        bar_height=max(3, 2 * line_thickness),
    )


def emotion_color(emotion: str, order: ColorOrder = "rgb") -> Color:
    """The emotion's colour in the given channel order."""
    return in_order(EMOTION_COLORS[emotion], order)


def in_order(rgb_color: Color, order: ColorOrder) -> Color:
    """An RGB colour reordered for an array in `order`."""
    if order == "rgb":
        return rgb_color
    if order == "bgr":
        return rgb_color[::-1]
    raise ValueError(f"order must be 'rgb' or 'bgr', got {order!r}")


def text_color_on(background: Color) -> Color:
    """Black or white, whichever reads better on `background` (either order: both are grey)."""
    # Rec. 601 luma; the weights are close enough in both orders to pick the same side.
    red, green, blue = background
    luma = 0.299 * red + 0.587 * green + 0.114 * blue
    return BLACK if luma >= 140 else WHITE


def face_label(face: Face) -> str:
    """'happy 87%', 'happy or neutral?' where no emotion is clearly ahead, and '#2 happy 87%' for a
    tracked face."""
    label = (
        f"{face.emotion} or {face.runner_up}?"
        if face.uncertain
        else f"{face.emotion} {round(100 * face.confidence)}%"
    )
    return label if face.id is None else f"#{face.id} {label}"


def _check_canvas(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("draw on a uint8 (H, W, 3) array")
    if not (image.flags.c_contiguous and image.flags.writeable):
        raise ValueError("draw on a writeable C-contiguous array (np.ascontiguousarray(image).copy())")


class Canvas(Protocol):
    """A picture the drawing functions draw on in place, with colours given in RGB."""

    shape: tuple[int, int, int]  # (H, W, 3)

    def rectangle(self, top_left: Point, bottom_right: Point, color: Color, thickness: int) -> None:
        """Corners included; a negative thickness (cv2.FILLED) fills it."""

    def text(self, text: str, origin: Point, font_scale: float, color: Color, thickness: int) -> None:
        """FONT text whose baseline starts at origin."""

    def darken_top(self, rows: int, opacity: float) -> None:
        """Blend the top `rows` rows with black."""


class ArrayCanvas:
    """A uint8 (H, W, 3) array whose channels are in `order`."""

    def __init__(self, image: np.ndarray, order: ColorOrder = "rgb"):
        _check_canvas(image)
        in_order(BLACK, order)  # an unknown order fails here
        self.image, self.order, self.shape = image, order, image.shape

    def rectangle(self, top_left: Point, bottom_right: Point, color: Color, thickness: int) -> None:
        cv2.rectangle(self.image, top_left, bottom_right, in_order(color, self.order), thickness)

    def text(self, text: str, origin: Point, font_scale: float, color: Color, thickness: int) -> None:
        color = in_order(color, self.order)
        cv2.putText(self.image, text, origin, FONT, font_scale, color, thickness, cv2.LINE_AA)

    def darken_top(self, rows: int, opacity: float) -> None:
        strip = self.image[:rows]
        strip[:] = (strip * (1.0 - opacity)).astype(np.uint8)


class I420Canvas:
    """The planes of a yuv420p picture (a WebRTC video frame's own format), drawn on as one.

    y: uint8 (H, W); u, v: uint8 ((H + 1) // 2, (W + 1) // 2). Every shape goes on the luma plane
    at full size and on the two chroma planes at half size, in the colour's BT.601 YCbCr: video
    range (luma 16-235) unless `full_range`. Drawing this way costs no conversion of the picture
    to RGB and back.
    """

    def __init__(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, full_range: bool = False):
        height, width = y.shape
        chroma_shape = ((height + 1) // 2, (width + 1) // 2)
        for plane in (y, u, v):
            if plane.dtype != np.uint8 or plane.ndim != 2 or not plane.flags.writeable:
                raise ValueError("draw on writeable uint8 (H, W) planes")
        if u.shape != chroma_shape or v.shape != chroma_shape:
            raise ValueError(f"chroma planes of a {width}x{height} yuv420p picture are {chroma_shape}")
        self.planes, self.full_range, self.shape = (y, u, v), full_range, (height, width, 3)

    def _ycbcr(self, color: Color) -> tuple[int, int, int]:
        matrix, offset = FULL_RANGE_YCBCR if self.full_range else VIDEO_RANGE_YCBCR
        values = matrix @ np.asarray(color, dtype=np.float64) + offset
        return tuple(int(value) for value in np.clip(np.rint(values), 0, 255))

    def rectangle(self, top_left: Point, bottom_right: Point, color: Color, thickness: int) -> None:
        (left, top), (right, bottom) = top_left, bottom_right
        luma, *chroma = self._ycbcr(color)
        cv2.rectangle(self.planes[0], (left, top), (right, bottom), luma, thickness)
        half_thickness = thickness if thickness < 0 else max(1, round(thickness / 2))
        for plane, value in zip(self.planes[1:], chroma, strict=True):
            cv2.rectangle(plane, (left // 2, top // 2), (right // 2, bottom // 2), value, half_thickness)

    def text(self, text: str, origin: Point, font_scale: float, color: Color, thickness: int) -> None:
        luma, *chroma = self._ycbcr(color)
        cv2.putText(self.planes[0], text, origin, FONT, font_scale, luma, thickness, cv2.LINE_AA)
        half_origin, half_thickness = (origin[0] // 2, origin[1] // 2), max(1, round(thickness / 2))
        for plane, value in zip(self.planes[1:], chroma, strict=True):
            cv2.putText(plane, text, half_origin, FONT, font_scale / 2, value, half_thickness, cv2.LINE_AA)

    def darken_top(self, rows: int, opacity: float) -> None:
        black = self._ycbcr(BLACK)
        chroma_rows = (rows + 1) // 2
        for plane, value, plane_rows in zip(
            self.planes, black, (rows, chroma_rows, chroma_rows), strict=True
        ):
            strip = plane[:plane_rows]
            cv2.addWeighted(strip, 1.0 - opacity, strip, 0.0, value * opacity, dst=strip)


def _as_canvas(image: np.ndarray | Canvas, order: ColorOrder = "rgb") -> Canvas:
    """An array as a canvas whose colours are given in `order` (ArrayCanvas(image, "rgb") takes
    them as they are, whatever its order); a canvas as it is."""
    return ArrayCanvas(image, order) if isinstance(image, np.ndarray) else image


def draw_label(
    image: np.ndarray | Canvas, text: str, x: int, y: int, color: Color, style: DrawStyle | None = None
) -> tuple[int, int, int, int]:
    """A filled label with `text` whose bottom-left corner is near (x, y), kept inside the image.

    Returns the label's rectangle (left, top, right, bottom).
    """
    canvas = _as_canvas(image)
    style = style or style_for(canvas.shape)
    height, width = canvas.shape[:2]
    (text_width, text_height), baseline = cv2.getTextSize(text, FONT, style.font_scale, style.text_thickness)
    label_width = text_width + 2 * style.margin
    label_height = text_height + baseline + 2 * style.margin
    left = min(max(0, x), max(0, width - label_width))
    top = min(max(0, y - label_height), max(0, height - label_height))
    right, bottom = left + label_width, top + label_height
    canvas.rectangle((left, top), (right - 1, bottom - 1), color, cv2.FILLED)
    origin = (left + style.margin, bottom - style.margin - baseline)
    canvas.text(text, origin, style.font_scale, text_color_on(color), style.text_thickness)
    return left, top, right, bottom


def draw_face_box(
    image: np.ndarray | Canvas,
    box: Box,
    label: str,
    color: Color,
    confidence: float | None = None,
    style: DrawStyle | None = None,
) -> tuple[int, int, int, int]:
    """In place: the box, its label above it (inside it when the box touches the top edge) and,
    given a confidence in [0, 1], a bar under the box filled that far.

    Returns the label's rectangle (left, top, right, bottom).
    """
    canvas = _as_canvas(image)
    style = style or style_for(canvas.shape)
    height, width = canvas.shape[:2]
    x, y, w, h = (int(value) for value in box)
    inset = style.line_thickness // 2  # OpenCV centres thick lines on the edge: keep them inside the box
    canvas.rectangle(
        (x + inset, y + inset), (x + w - 1 - inset, y + h - 1 - inset), color, style.line_thickness
    )
    (_, text_height), baseline = cv2.getTextSize(label, FONT, style.font_scale, style.text_thickness)
    label_height = text_height + baseline + 2 * style.margin
    label_bottom = y if y >= label_height else min(height, y + label_height)
    label_rectangle = draw_label(canvas, label, x, label_bottom, color, style)
    if confidence is None:
        return label_rectangle
    bar_top = y + h if y + h + style.bar_height <= height else y + h - style.bar_height
    bar_top = max(0, bar_top)
    bar_bottom = min(height, bar_top + style.bar_height) - 1
    right = min(width, x + w) - 1
    filled = x + round((right - x) * min(max(float(confidence), 0.0), 1.0))
    canvas.rectangle((x, bar_top), (right, bar_bottom), BAR_BACKGROUND, cv2.FILLED)
    if filled > x:
        canvas.rectangle((x, bar_top), (filled, bar_bottom), color, cv2.FILLED)
    return label_rectangle


def draw_face(
    image: np.ndarray | Canvas,
    face: Face,
    order: ColorOrder = "rgb",
    label: str | None = None,
    style: DrawStyle | None = None,
) -> tuple[int, int, int, int]:
    """In place: one face in its emotion's colour, labelled 'happy 87%' (or `label`); `order` is
    an array's channel order.

    Returns the label's rectangle (left, top, right, bottom).
    """
    return draw_face_box(
        _as_canvas(image, order),
        face.box,
        label if label is not None else face_label(face),
        EMOTION_COLORS[face.emotion],
        confidence=face.confidence,
        style=style,
    )


def draw_banner(image: np.ndarray | Canvas, text: str, style: DrawStyle | None = None) -> None:
    """In place: a translucent black strip across the top with one line of white text (shrunk to fit)."""
    canvas = _as_canvas(image)
    style = style or style_for(canvas.shape)
    width = canvas.shape[1]
    font_scale = style.font_scale
    (text_width, text_height), baseline = cv2.getTextSize(text, FONT, font_scale, style.text_thickness)
    if text_width + 2 * style.margin > width:
        font_scale *= (width - 2 * style.margin) / max(1, text_width)
        (text_width, text_height), baseline = cv2.getTextSize(text, FONT, font_scale, style.text_thickness)
    strip_height = min(canvas.shape[0], text_height + baseline + 2 * style.margin)
    canvas.darken_top(strip_height, BANNER_OPACITY)
    origin = (style.margin, strip_height - style.margin - baseline)
    canvas.text(text, origin, font_scale, WHITE, style.text_thickness)


def draw_faces(image: np.ndarray | Canvas, faces: Iterable[Face], order: ColorOrder = "rgb") -> None:
    """In place: every face, labelled 'happy 87%', a tracked face '#2 happy 87%'."""
    canvas = _as_canvas(image, order)
    style = style_for(canvas.shape)
    # Smallest first, so the largest (main) face's label ends up on top where labels overlap.
    for face in sorted(faces, key=lambda face: face.box.w * face.box.h):
        draw_face(canvas, face, style=style)


def draw_live_overlay(image: np.ndarray | Canvas, faces: Sequence[Face], fps: float | None = None) -> None:
    """In place: the live overlay on a video frame (BGR as an array): its faces as `draw_faces`
    draws them, under a status strip at the top saying NO_FACE_TEXT when there is none and, given
    a measured `fps` (not None or 0), the frame rate."""
    canvas = _as_canvas(image, "bgr")
    draw_faces(canvas, faces)
    status = [] if faces else [NO_FACE_TEXT]
    if fps:
        status.append(f"{fps:.0f} FPS")
    if status:
        draw_banner(canvas, "   ".join(status))


def annotate(image: np.ndarray, faces: Iterable[Face], order: ColorOrder = "rgb") -> np.ndarray:
    """A copy of the (H, W, 3) uint8 image (colours in `order`; or a grayscale (H, W) one, drawn on
    as RGB) with every face drawn on it: labelled 'happy 87%', a tracked face '#2 happy 87%'."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"annotate takes an RGB (H, W, 3) or grayscale uint8 image, got {image.shape}")
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else np.array(image, order="C")
    draw_faces(canvas, faces, order)
    return canvas


def annotate_frame(bgr: np.ndarray, faces: Sequence[Face], fps: float | None = None) -> np.ndarray:
    """The live overlay (`draw_live_overlay`) on a copy of a BGR (H, W, 3) video frame."""
    canvas = np.array(bgr, order="C")
    draw_live_overlay(canvas, faces, fps)
    return canvas
