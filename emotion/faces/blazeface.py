"""Find faces, turned ones too, with MediaPipe's BlazeFace and level them by their eyes.

BlazeFace (Bazarevsky et al. 2019; the models in model/, Apache-2.0, see model/README.md) is a
single-shot detector: one pass of a small network over the picture shrunk to its input size
scores a fixed grid of anchors and, for each, regresses a box and six keypoints (the two eyes,
the nose tip, the mouth, the two ear tragions). Decoding those into faces (anchors, sigmoid
scores, weighted non-maximum suppression) follows MediaPipe's own calculators
(ssd_anchors_calculator, tensors_to_detections_calculator, non_max_suppression_calculator).
It runs on the LiteRT interpreter the emotion model uses, without TensorFlow.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from emotion.faces.common import Detection, DetectorSettings, square_box, turned_square

MODEL_DIR = Path(__file__).resolve().parent.parent.parent / "model"
RAW_SCORE_LIMIT = 80.0  # logits are clipped here before the sigmoid (MediaPipe uses 100; float32 overflows)
SUPPRESSION_IOU = 0.3  # detections overlapping the best one by more than this are merged into it
DETECTOR_THREADS = 1  # per call: callers run in parallel (the webcam, the page), one core each
# The smallest faces (FER2013 square's side, in model input pixels) each model finds reliably on
# upscaled FER2013 faces and skimage's astronaut (scripts/benchmark_faces.py --sizes).
SHORT_RANGE_MIN_FACE = 24
FULL_RANGE_MIN_FACE = 20
MAX_ASPECT = 3  # the short-range model's input is at most this many times longer than wide
# The full-range model sees the whole picture when that is at most this much larger than needed.
WHOLE_PICTURE_SLACK = 1.25
REFINE_SCALE = 2.0  # the second look shows the face in a window this many times its side
REFINE_CENTER_TOLERANCE = 0.15  # and finds it again within this fraction of the window of its middle
SURE_SCORE = 0.7  # first-look faces under this score must be confirmed by the second look


class FerFraming(NamedTuple):
    """Where FER2013 puts a face in its square, in fractions of the square's side."""

    eyes_y: float  # height of the point midway between the eyes, from the top (it is centred across)
    eye_distance: float
    box_side: float  # BlazeFace's box side


# Measured by scripts/benchmark_faces.py --framing: the medians over FER+ val faces that this
# finder finds (upscaled to 144 px and border-extended), the square being FER2013's own crop.
FER_FRAMING = FerFraming(eyes_y=0.387, eye_distance=0.363, box_side=0.866)


@dataclass(frozen=True)
class AnchorSpec:
    """MediaPipe's SSD anchor options for one BlazeFace model (fixed anchor size 1)."""

    input_size: int  # pixels; the side of the model's square RGB input
    strides: tuple[int, ...]  # one per feature-map layer
    # 1.0 adds a second anchor per aspect ratio at each position (two per layer), 0.0 does not.
    interpolated_scale_aspect_ratio: float


class BlazeFaceModel(NamedTuple):
    file: str  # in MODEL_DIR
    anchors: AnchorSpec
    # Whether the network also runs on inputs of other sizes (multiples of its largest stride)
    # than the square it was trained on, its anchors' grids growing with them.
    any_input_shape: bool


# face_detection_short_range_common.pbtxt: faces within about 2 m of the camera.
SHORT_RANGE = BlazeFaceModel(
    "face_detection_short_range.tflite", AnchorSpec(128, (8, 16, 16, 16), 1.0), any_input_shape=True
)
# face_detection_full_range_common.pbtxt: faces within about 5 m. XNNPACK prepares it for 192x192 only.
FULL_RANGE = BlazeFaceModel(
    "face_detection_full_range.tflite", AnchorSpec(192, (4,), 0.0), any_input_shape=False
)


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


class _Runner:
    """One BlazeFace model's interpreters, lent out one caller at a time (an interpreter is not
    re-entrant) and kept per input shape (changing one's shape costs a new plan), with the
    anchors of each shape."""

    def __init__(self, model: BlazeFaceModel):
        self.model = model
        self._free: dict[tuple[int, int], list] = {}
        self._anchors: dict[tuple[int, int], np.ndarray] = {}
        self._lock = threading.Lock()

    def _new_interpreter(self, shape: tuple[int, int]):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(MODEL_DIR / self.model.file), num_threads=DETECTOR_THREADS)
        input_index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(input_index, (1, *shape, 3))
        interpreter.allocate_tensors()
        outputs = {detail["shape"][-1]: detail for detail in interpreter.get_output_details()}
        anchors = generate_anchors(self.model.anchors, *shape)
        if sorted(outputs) != [1, 16] or outputs[16]["shape"][1] != len(anchors):
            raise RuntimeError(f"{self.model.file} is not the BlazeFace model its anchors were made for")
        return interpreter, input_index, outputs[16]["index"], outputs[1]["index"], anchors

    def run(self, picture: np.ndarray, min_score: float) -> list[tuple[np.ndarray, float]]:
        """A grayscale (H, W) uint8 input-sized picture -> [(detection (8, 2) in its pixels, score)]."""
        shape = picture.shape
        rgb = np.repeat(picture[None, :, :, None], 3, axis=3)  # (1, H, W, 3)
        tensor = rgb.astype(np.float32) / 127.5 - 1.0
        with self._lock:
            free = self._free.setdefault(shape, [])
            runner = free.pop() if free else None
        if runner is None:
            runner = self._new_interpreter(shape)
        interpreter, input_index, regressors_index, logits_index, anchors = runner
        try:
            interpreter.set_tensor(input_index, tensor)
            interpreter.invoke()
            regressors = interpreter.get_tensor(regressors_index)[0]
            logits = interpreter.get_tensor(logits_index)[0]
        finally:
            with self._lock:
                self._free[shape].append(runner)
        return weighted_suppression(*decode(regressors, logits, anchors, min_score))


_RUNNERS: dict[str, _Runner] = {}
_RUNNERS_LOCK = threading.Lock()


def _runner(model: BlazeFaceModel) -> _Runner:
    with _RUNNERS_LOCK:
        if model.file not in _RUNNERS:
            _RUNNERS[model.file] = _Runner(model)
        return _RUNNERS[model.file]


def _input_shape(height: int, width: int, model: BlazeFaceModel) -> tuple[tuple[int, int], float]:
    """The model input a picture is shown in, and the picture's scale in it.

    A model that runs on any input shape sees the picture scaled so that its shorter side fills
    the model's input size, the longer side rounded up to a multiple of the largest stride and
    at most MAX_ASPECT times the size (a panorama's length is then scaled down further); a
    square-only model sees it whole, letterboxed.
    """
    size = model.anchors.input_size
    if not model.any_input_shape:
        return (size, size), size / max(height, width)
    scale = min(size / min(height, width), MAX_ASPECT * size / max(height, width))
    step = max(model.anchors.strides)
    shape = tuple(max(size, math.ceil(side * scale / step) * step) for side in (height, width))
    return shape, scale


def _detect(gray: np.ndarray, model: BlazeFaceModel, min_score: float) -> list[RawFace]:
    """Faces in a grayscale (H, W) uint8 picture shown whole to the model (centred, on black)."""
    height, width = gray.shape
    shape, scale = _input_shape(height, width, model)
    fitted = (min(shape[1], max(1, round(width * scale))), min(shape[0], max(1, round(height * scale))))
    left, top = (shape[1] - fitted[0]) // 2, (shape[0] - fitted[1]) // 2
    picture = np.zeros(shape, np.uint8)
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    resized = cv2.resize(gray, fitted, interpolation=interpolation)
    picture[top : top + fitted[1], left : left + fitted[0]] = resized
    faces = []
    for detection, score in _runner(model).run(picture, min_score):
        points = (detection - (left, top)) / scale  # (8, 2) in the picture's pixels
        faces.append(RawFace(points[:2].reshape(4), points[2:], score))
    return faces


def _tiles(length: int, tile: int) -> list[int]:
    """Starts of tiles of `tile` pixels covering `length`, overlapping by at least half a tile."""
    if length <= tile:
        return [0]
    count = math.ceil((length - tile) / (tile / 2)) + 1
    return [round(index * (length - tile) / (count - 1)) for index in range(count)]


def _detect_small(gray: np.ndarray, min_face: float, min_score: float) -> list[RawFace]:
    """Faces down to min_face pixels: the full-range model over a pyramid of tiles.

    Each level shrinks the picture so that the smallest face it looks for spans FULL_RANGE_MIN_FACE
    input pixels and tiles it with windows of the model's input size overlapping by half, so every
    face under half a window lies whole in one of them; larger faces are whole in the next,
    coarser level, the last of which shows the model the whole picture.
    """
    height, width = gray.shape
    size = FULL_RANGE.anchors.input_size
    scale = min(1.0, FULL_RANGE_MIN_FACE / min_face)
    faces = []
    while max(height, width) * scale > size * WHOLE_PICTURE_SLACK:
        tile = round(size / scale)  # picture pixels
        for top in _tiles(height, tile):
            for left in _tiles(width, tile):
                offset = np.array([left, top], np.float32)
                for face in _detect(gray[top : top + tile, left : left + tile], FULL_RANGE, min_score):
                    faces.append(RawFace(face.box + np.tile(offset, 2), face.keypoints + offset, face.score))
        scale /= 2.0
    return faces + _detect(gray, FULL_RANGE, min_score)


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


def _refined(gray: np.ndarray, face: RawFace, min_score: float) -> RawFace | None:
    """The face found again in its own neighbourhood, turned upright and shown REFINE_SCALE times
    larger than the face to the short-range model: keypoints a few times more precise than a
    search of the whole picture gives.

    A face the first look was unsure of (under SURE_SCORE) must be seen again near the middle,
    and the geometric mean of both looks' scores reach min_score: the first look's weakest
    finds are often patterns on clothes or walls. None if it is not; a face the first look was
    sure of is kept as it was when the second look misses it.
    """
    frame = keypoint_frame(face)
    center, side = fer_square(frame)
    size = SHORT_RANGE.anchors.input_size
    window_side = REFINE_SCALE * side
    window = turned_square(gray, center, window_side, frame.angle, size)
    found = [
        (points / size, score)  # in 0-1 of the window
        for points, score in _runner(SHORT_RANGE).run(window, min_score**2)
        if np.all(np.abs(points[:2].mean(axis=0) / size - 0.5) < REFINE_CENTER_TOLERANCE)
    ]
    sure = face.score >= SURE_SCORE
    if not found:
        return face if sure else None
    points, score = max(found, key=lambda item: item[1])
    if not sure and math.sqrt(score * face.score) < min_score:
        return None
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

    The short-range model sees the whole picture, its shorter side scaled to the model's input
    size (faces from about a fifth of that side up); where smaller faces are sought, the
    full-range model searches a pyramid of tiles too.
    Overlapping finds are merged and each face is looked at again, upright (`_refined`).
    """
    height, width = gray.shape
    min_face = settings.min_face(height, width)  # input px
    raw = _detect(gray, SHORT_RANGE, settings.min_score)
    if min_face * _input_shape(height, width, SHORT_RANGE)[1] < SHORT_RANGE_MIN_FACE:
        raw += _detect_small(gray, min_face, settings.min_score)
    if not raw:
        return []
    points = np.stack([np.concatenate([face.box.reshape(2, 2), face.keypoints]) for face in raw])
    merged = weighted_suppression(points, np.array([face.score for face in raw], np.float32))
    refined = [
        _refined(gray, RawFace(face_points[:2].reshape(4), face_points[2:], score), settings.min_score)
        for face_points, score in merged
    ]
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
