"""Find faces, turned ones too, with MediaPipe's BlazeFace and level them by their eyes.

BlazeFace (Bazarevsky et al. 2019; the short-range model in model/, Apache-2.0, see
model/FACE_FINDERS.md) is a single-shot detector: one pass of a small network over the picture
scores a fixed grid of anchors and, for each, regresses a box and six keypoints (the two eyes,
the nose tip, the mouth, the two ear tragions). The network is convolutional: it runs on any
input whose sides are multiples of 16, its anchor grids growing with the input. Decoding those
into faces (anchors, sigmoid scores, weighted non-maximum suppression) follows MediaPipe's own
calculators (ssd_anchors_calculator, tensors_to_detections_calculator,
non_max_suppression_calculator). It runs on the LiteRT interpreter the emotion model uses,
without TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

import cv2
import numpy as np

from emotion.faces.common import Detection, DetectorSettings, FaceFinder, shrink, square_box, turned_square
from emotion.faces.pool import LendingPool
from emotion.model_file import shipped_file

FINDER_NAME = "blazeface"
RAW_SCORE_LIMIT = 80.0  # logits are clipped here before the sigmoid (MediaPipe uses 100; float32 overflows)
SUPPRESSION_IOU = 0.3  # detections overlapping the best one by more than this are merged into it
DETECTOR_THREADS = 1  # per call: callers run in parallel (the webcam, the page), one core each
# The smallest face (FER2013 square's side, in model input pixels) the model finds reliably, on
# upscaled FER2013 faces and skimage's astronaut: the picture is scaled so that the smallest face
# sought spans this many input pixels.
MIN_INPUT_FACE = 24
INPUT_STEP = 16  # the input's sides are multiples of the network's largest stride
# Interpreters are kept for reuse for this many input shapes (the webcam's, recent photos'), and
# only for inputs up to this size: an interpreter's buffers grow with its input's pixels (the face
# finders' card gives their size), and making one costs more than running it once.
MAX_INPUT_SHAPES = 4
MAX_KEPT_INPUT_PIXELS = 320 * 240
# The whole picture's second look, where the first finds no face (one too large for it, say): the
# picture shrunk into the model's own window with a black border of this fraction of its longer
# side all round (chosen with scripts/benchmark_faces.py --close-ups).
CLOSE_UP_MARGIN = 0.3
REFINE_SCALE = 2.0  # the second look shows the face in a window this many times its side
REFINE_INPUT_SIZE = 128  # pixels: the window shown to the model, the face spanning half of it
REFINE_CENTER_TOLERANCE = 0.15  # and finds it again within this fraction of the window of its middle
SURE_SCORE = 0.7  # first-look faces under this score must be confirmed by the looks after
# An unsure face is confirmed when the mean score of three looks (the first, the second and the
# second's window mirrored) reaches the settings' min_score plus this: 0.62 at the default 0.5.
# Chosen with scripts/benchmark_faces.py (--false-alarms, and the FER+ faces found): patterns
# on clothes and walls in large photos score as high as a face once, rarely three times.
CONFIRM_MARGIN = 0.12


class FerFraming(NamedTuple):
    """Where FER2013 puts a face in its square, in fractions of the square's side."""

    eyes_y: float  # height of the point midway between the eyes, from the top (it is centred across)
    eye_distance: float
    box_side: float  # BlazeFace's box side


# Measured by scripts/benchmark_faces.py --framing: the medians over the first 800 FER+ val faces
# (upscaled to 144 px and border-extended) that this finder finds, the square being FER2013's own.
FER_FRAMING = FerFraming(eyes_y=0.390, eye_distance=0.365, box_side=0.865)


@dataclass(frozen=True)
class AnchorSpec:
    """MediaPipe's SSD anchor options for one BlazeFace model (fixed anchor size 1)."""

    input_size: int  # pixels; the side of the square RGB input the model was trained on
    strides: tuple[int, ...]  # one per feature-map layer
    # 1.0 adds a second anchor per aspect ratio at each position (two per layer), 0.0 does not.
    interpolated_scale_aspect_ratio: float


# face_detection_short_range_common.pbtxt: faces within about 2 m of the camera.
SHORT_RANGE = AnchorSpec(128, (8, 16, 16, 16), 1.0)
MODEL_FILE = shipped_file("face_detection_short_range.tflite")


class RawFace(NamedTuple):
    """One decoded face in the picture's pixels."""

    box: np.ndarray  # float32 (4,): x_min, y_min, x_max, y_max
    keypoints: np.ndarray  # float32 (6, 2): (x, y) of right eye, left eye, nose, mouth, right ear, left ear
    score: float  # 0-1


def generate_anchors(spec: AnchorSpec, height: int, width: int) -> np.ndarray:
    """The anchors' centres for a (height, width) input, float32 (N, 2) of (x, y) in input
    pixels, in the model's output order (ssd_anchors_calculator with fixed anchor size).

    Consecutive layers with the same stride share one feature map, whose every cell holds the
    anchors of all of them (two each with the interpolated aspect ratio, else one), row by row.
    """
    centers = []
    layer = 0
    while layer < len(spec.strides):
        stride = spec.strides[layer]
        same_stride = 0
        while layer + same_stride < len(spec.strides) and spec.strides[layer + same_stride] == stride:
            same_stride += 1
        per_cell = same_stride * (2 if spec.interpolated_scale_aspect_ratio == 1.0 else 1)
        rows, columns = math.ceil(height / stride), math.ceil(width / stride)
        y, x = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
        cell_centers = (np.stack([x.ravel(), y.ravel()], axis=1) + 0.5) * (width / columns, height / rows)
        centers.append(np.repeat(cell_centers, per_cell, axis=0))
        layer += same_stride
    return np.concatenate(centers).astype(np.float32)


def decode(
    regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray, min_score: float
) -> tuple[np.ndarray, np.ndarray]:
    """A BlazeFace model's raw outputs -> (boxes and keypoints, scores) of anchors above min_score.

    regressors: float32 (N, 16) per anchor: box centre offset (x, y) and size (w, h), then six
    keypoint offsets (x, y), in input pixels, offsets from the anchor's centre (N, 2) in
    `anchors`. logits: (N,) or (N, 1), before the sigmoid.
    Returns float32 (M, 8, 2) in input pixels: rows (x_min, y_min), (x_max, y_max), then the six
    keypoints; and float32 (M,) scores.
    """
    logits = np.clip(np.asarray(logits, np.float32).reshape(-1), -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = scores >= min_score
    points = regressors[keep].reshape(-1, 8, 2)  # (M, 8, 2)
    anchor_centers = anchors[keep][:, None, :]  # (M, 1, 2)
    center = points[:, :1] + anchor_centers
    half_size = points[:, 1:2] / 2.0
    decoded = np.concatenate([center - half_size, center + half_size, points[:, 2:] + anchor_centers], axis=1)
    valid = np.all(half_size[:, 0] > 0, axis=1)
    return decoded[valid].astype(np.float32), scores[keep][valid].astype(np.float32)


def weighted_suppression(
    detections: np.ndarray, scores: np.ndarray, iou_threshold: float = SUPPRESSION_IOU
) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression: each face is the score-weighted mean of the
    detections overlapping its best one by more than iou_threshold; it keeps the best score.

    detections: (M, 8, 2) as `decode` gives them. Returns [(detection (8, 2), score)], best first.
    """
    order = np.argsort(-scores, kind="stable")
    detections, scores = detections[order], scores[order]
    remaining = np.arange(len(scores))
    faces = []
    while remaining.size:
        boxes = detections[remaining, :2].reshape(-1, 4)  # x_min, y_min, x_max, y_max
        best = boxes[0]
        width = np.clip(np.minimum(best[2], boxes[:, 2]) - np.maximum(best[0], boxes[:, 0]), 0, None)
        height = np.clip(np.minimum(best[3], boxes[:, 3]) - np.maximum(best[1], boxes[:, 1]), 0, None)
        intersection = width * height
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        iou = intersection / np.maximum(areas[0] + areas - intersection, 1e-12)
        merged = iou > iou_threshold
        merged[0] = True
        weights = scores[remaining[merged]]
        mean = np.tensordot(weights, detections[remaining[merged]], axes=1) / weights.sum()
        faces.append((mean.astype(np.float32), float(scores[remaining[0]])))
        remaining = remaining[~merged]
    return faces


@dataclass(frozen=True)
class BlazeFaceSettings:
    """BlazeFace's own settings.

    min_score: how sure the network must be that a face is there (0-1; MediaPipe uses 0.5).
    """

    min_score: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.min_score < 1.0:
            raise ValueError(f"min_score must be between 0 and 1, got {self.min_score}")


def _new_interpreter(shape: tuple[int, int]):
    """An interpreter planned for (1, *shape, 3) inputs: (interpreter, input index, regressors'
    index, logits' index, the shape's anchors)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(MODEL_FILE), num_threads=DETECTOR_THREADS)
    input_index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(input_index, (1, *shape, 3))
    interpreter.allocate_tensors()
    outputs = {detail["shape"][-1]: detail for detail in interpreter.get_output_details()}
    anchors = generate_anchors(SHORT_RANGE, *shape)
    if sorted(outputs) != [1, 16] or outputs[16]["shape"][1] != len(anchors):
        raise RuntimeError(f"{MODEL_FILE.name} is not the BlazeFace model its anchors were made for")
    return interpreter, input_index, outputs[16]["index"], outputs[1]["index"], anchors


class _Interpreters:
    """The model's interpreters, lent out one caller at a time (an interpreter is not re-entrant)
    and kept per input shape (changing one's shape costs a new plan), for the MAX_INPUT_SHAPES
    small shapes used last, with the anchors of each shape."""

    def __init__(self) -> None:
        self.pool = LendingPool(_new_interpreter, max_keys=MAX_INPUT_SHAPES)

    def run(self, picture: np.ndarray, min_score: float) -> list[tuple[np.ndarray, float]]:
        """A grayscale (H, W) uint8 picture, sides multiples of INPUT_STEP -> its faces, best
        first: [(detection (8, 2) in its pixels as `decode` gives it, score)]."""
        shape = picture.shape
        rgb = np.repeat(picture[None, :, :, None], 3, axis=3)  # (1, H, W, 3)
        tensor = rgb.astype(np.float32) / 127.5 - 1.0
        kept = shape[0] * shape[1] <= MAX_KEPT_INPUT_PIXELS
        with self.pool.borrow(shape, keep=kept) as runner:
            interpreter, input_index, regressors_index, logits_index, anchors = runner
            interpreter.set_tensor(input_index, tensor)
            interpreter.invoke()
            regressors = interpreter.get_tensor(regressors_index)[0]
            logits = interpreter.get_tensor(logits_index)[0]
        return weighted_suppression(*decode(regressors, logits, anchors, min_score))


_INTERPRETERS = _Interpreters()


def _detect(gray: np.ndarray, scale: float, min_score: float, margin: float = 0.0) -> list[RawFace]:
    """Faces in a grayscale (H, W) uint8 picture shown whole to the model at `scale`, with a black
    border of `margin` times its longer side all round, then padded with black on the right and
    below to sides that are multiples of INPUT_STEP and at least the model's own size."""
    height, width = gray.shape
    fitted = (max(1, round(width * scale)), max(1, round(height * scale)))
    border = round(margin * max(fitted))
    shape = tuple(
        max(SHORT_RANGE.input_size, math.ceil((side + 2 * border) / INPUT_STEP) * INPUT_STEP)
        for side in fitted[::-1]
    )
    picture = np.zeros(shape, np.uint8)
    picture[border : border + fitted[1], border : border + fitted[0]] = (
        shrink(gray, fitted) if scale < 1.0 else cv2.resize(gray, fitted, interpolation=cv2.INTER_LINEAR)
    )
    faces = []
    for detection, score in _INTERPRETERS.run(picture, min_score):
        # (8, 2) in the picture's pixels
        points = (detection - border) / (fitted[0] / width, fitted[1] / height)
        faces.append(RawFace(points[:2].reshape(4), points[2:], score))
    return faces


class KeypointFrame(NamedTuple):
    """Where a face's eyes are, and how large its box, in the picture's pixels."""

    eyes_center: np.ndarray  # float (2,): midway between the eyes
    eye_distance: float
    angle: float  # degrees; see Detection.angle
    box_side: float  # the mean of the detector box's width and height


def keypoint_frame(face: RawFace) -> KeypointFrame:
    right_eye, left_eye = face.keypoints[0].astype(np.float64), face.keypoints[1].astype(np.float64)
    eye_line = left_eye - right_eye
    box_side = float((face.box[2] - face.box[0] + face.box[3] - face.box[1]) / 2.0)
    angle = math.degrees(math.atan2(eye_line[1], eye_line[0]))
    return KeypointFrame((right_eye + left_eye) / 2.0, float(np.hypot(*eye_line)), angle, box_side)


def fer_square(frame: KeypointFrame) -> tuple[tuple[float, float], float]:
    """The (centre, side) of the square FER2013 would have cut around this face (see FER_FRAMING),
    before it is turned by frame.angle."""
    side = (frame.eye_distance / FER_FRAMING.eye_distance + frame.box_side / FER_FRAMING.box_side) / 2.0
    cos, sin = math.cos(math.radians(frame.angle)), math.sin(math.radians(frame.angle))
    # From the eyes to the square's centre, along the face's own axes.
    down = (0.5 - FER_FRAMING.eyes_y) * side
    return (frame.eyes_center[0] - sin * down, frame.eyes_center[1] + cos * down), side


def _centred(window: np.ndarray, min_score: float) -> list[tuple[np.ndarray, float]]:
    """The faces the model finds near the middle of a square grayscale window:
    [(detection (8, 2) in 0-1 of the window, score)]."""
    size = window.shape[0]
    return [
        (points / size, score)
        for points, score in _INTERPRETERS.run(window, min_score)
        if np.all(np.abs(points[:2].mean(axis=0) / size - 0.5) < REFINE_CENTER_TOLERANCE)
    ]


def _refined(gray: np.ndarray, face: RawFace, min_score: float) -> RawFace | None:
    """The face found again in its own neighbourhood, turned upright and shown REFINE_SCALE times
    larger than the face to the short-range model: keypoints a few times more precise than a
    search of the whole picture gives.

    A face the first look was unsure of (under SURE_SCORE) must be seen again near the middle
    of the window, and of the window mirrored, the three looks' mean score reaching min_score +
    CONFIRM_MARGIN: the first look's weakest finds are often patterns on clothes or walls. None
    if it is not; a face the first look was sure of is kept as it was when the second look
    misses it.
    """
    frame = keypoint_frame(face)
    center, side = fer_square(frame)
    size = REFINE_INPUT_SIZE
    window_side = REFINE_SCALE * side
    window = turned_square(gray, center, window_side, frame.angle, size)
    found = _centred(window, min_score)
    if face.score < SURE_SCORE:
        mirrored = _centred(np.ascontiguousarray(window[:, ::-1]), min_score)
        looks = [face.score] + [
            max((score for _, score in faces), default=0.0) for faces in (found, mirrored)
        ]
        if sum(looks) / len(looks) < min_score + CONFIRM_MARGIN:
            return None
    if not found:
        return face
    points, _ = max(found, key=lambda item: item[1])
    cos, sin = math.cos(math.radians(frame.angle)), math.sin(math.radians(frame.angle))
    offsets = (points - 0.5) * window_side  # (8, 2) along the face's axes
    turned = np.stack(
        [
            center[0] + offsets[:, 0] * cos - offsets[:, 1] * sin,
            center[1] + offsets[:, 0] * sin + offsets[:, 1] * cos,
        ],
        axis=1,
    )
    box_side = (points[1] - points[0]) * window_side  # (w, h), measured upright
    box_center = turned[:2].mean(axis=0)
    box = np.concatenate([box_center - box_side / 2.0, box_center + box_side / 2.0])
    return RawFace(box.astype(np.float32), turned[2:].astype(np.float32), face.score)


def locate(gray: np.ndarray, settings: DetectorSettings) -> list[RawFace]:
    """Faces with their keypoints in a grayscale (H, W) uint8 image, upright or turned.

    The model sees the whole picture once, scaled so that the smallest face sought spans
    MIN_INPUT_FACE pixels (and the shorter side at least the model's own size), but never
    longer than settings.max_detection_side. Where it finds no face at that scale, which leaves
    faces larger than the model's own window unseen (a face filling the picture), it sees the
    picture once more, whole in its window with a black border of CLOSE_UP_MARGIN all round (so
    that a face cut off at an edge is seen with room round it). Each face is then looked at
    again, upright (`_refined`).
    """
    height, width = gray.shape
    min_face = settings.min_face(height, width)  # input px
    scale = max(SHORT_RANGE.input_size / min(height, width), MIN_INPUT_FACE / min_face)
    scale = min(scale, settings.max_detection_side / max(height, width))
    faces = _refined_all(gray, _detect(gray, scale, settings.min_score), settings.min_score)
    close_up_scale = SHORT_RANGE.input_size / (max(height, width) * (1.0 + 2.0 * CLOSE_UP_MARGIN))
    if not faces and scale > close_up_scale:
        close_ups = _detect(gray, close_up_scale, settings.min_score, CLOSE_UP_MARGIN)
        faces = _refined_all(gray, close_ups, settings.min_score)
    return faces


def _refined_all(gray: np.ndarray, found: list[RawFace], min_score: float) -> list[RawFace]:
    """The faces that `_refined` keeps, each as it refines it."""
    refined = [_refined(gray, face, min_score) for face in found]
    return [face for face in refined if face is not None]


def find(gray: np.ndarray, settings: DetectorSettings) -> list[Detection]:
    """Faces in a grayscale (H, W) uint8 image, upright or turned, in no particular order: each
    one's square placed by its eyes and box as FER2013 frames its faces, turned as its eyes are."""
    height, width = gray.shape
    min_face = settings.min_face(height, width)  # input px
    detections = []
    for face in locate(gray, settings):
        frame = keypoint_frame(face)
        center, side = fer_square(frame)
        if side < min_face:
            continue
        left, top = center[0] - side / 2.0, center[1] - side / 2.0
        box = square_box(left, top, side, side, width, height, padding=0.0)
        detections.append(Detection(box, round(frame.angle, 1)))
    return detections


FINDER = FaceFinder(
    name=FINDER_NAME,
    summary="BlazeFace: upright and turned faces",
    help="BlazeFace, a small neural network that also finds the eyes, finds upright and turned faces "
    "and levels each face by its eyes before reading it, so turned faces are read about as well "
    "as upright ones. The face finders' card (model/FACE_FINDERS.md) gives how many it finds, "
    "upright and turned, and its CPU time per picture.",
    find=find,
    settings=BlazeFaceSettings,
    # A lower score finds more faces (small, turned, dim) and more false ones.
    sensitivities=MappingProxyType({"strict": {"min_score": 0.7}, "sensitive": {"min_score": 0.35}}),
)
