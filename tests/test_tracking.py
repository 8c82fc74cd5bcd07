"""Tracking faces from frame to frame: matching, following, smoothing, ids, on scripted frames."""

import cv2
import numpy as np
import pytest

from emotion.faces import Box, Detection, crop_faces
from emotion.labels import EMOTIONS
from emotion.tracking import FaceTracker, TrackingSettings, iou_matrix, match_boxes

FRAME_SHAPE = (480, 640, 3)


def one_hot(emotion: str, certainty: float = 0.9) -> np.ndarray:
    """Probabilities with `certainty` on `emotion` and the rest spread evenly."""
    probabilities = np.full(len(EMOTIONS), (1.0 - certainty) / (len(EMOTIONS) - 1), dtype=np.float32)
    probabilities[EMOTIONS.index(emotion)] = certainty
    return probabilities


class BrightnessClassifier:
    """Happy for bright crops, sad for dark ones; `override` replaces the next call's answers."""

    def __init__(self):
        self.override: np.ndarray | None = None
        self.calls = 0

    def predict_proba(self, faces: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.override is not None:
            answer, self.override = np.repeat(self.override[None], len(faces), axis=0), None
            return answer
        return np.array(
            [one_hot("happy") if face.mean() > 128 else one_hot("sad") for face in faces], dtype=np.float32
        ).reshape(-1, len(EMOTIONS))


class ScriptedDetector:
    """Returns the boxes given for each frame in turn (then none)."""

    def __init__(self, boxes_per_frame):
        self.boxes_per_frame = list(boxes_per_frame)
        self.calls = 0

    def __call__(self, gray):
        boxes = self.boxes_per_frame[self.calls] if self.calls < len(self.boxes_per_frame) else []
        self.calls += 1
        return [Detection(box) for box in boxes]


def frame_with_squares(boxes, values=None) -> np.ndarray:
    """Textured squares (so that they can be followed) of mean brightness `values` (220) on grey."""
    frame = np.full(FRAME_SHAPE, 60, dtype=np.uint8)
    for index, (x, y, w, h) in enumerate(boxes):
        # Smooth blobs, like a face's features, rather than pixel noise.
        coarse = np.random.default_rng(index).uniform(-30, 30, size=(6, 6)).astype(np.float32)
        texture = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
        frame[y : y + h, x : x + w] = np.clip((220 if values is None else values[index]) + texture, 0, 255)
    return frame


def tracker_for(boxes_per_frame, **settings) -> FaceTracker:
    settings.setdefault("detect_every", 1)
    return FaceTracker(
        BrightnessClassifier(), TrackingSettings(**settings), detector=ScriptedDetector(boxes_per_frame)
    )


def step(tracker: FaceTracker, bgr: np.ndarray) -> list:
    return tracker.update(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


def test_iou_and_greedy_matching():
    a = [Box(0, 0, 10, 10), Box(100, 100, 10, 10)]
    b = [Box(100, 102, 10, 10), Box(5, 0, 10, 10), Box(300, 300, 5, 5)]
    overlaps = iou_matrix(a, b)
    assert overlaps.shape == (2, 3)
    assert overlaps[0, 1] == pytest.approx(50 / 150)
    assert overlaps[0, 2] == 0.0
    assert match_boxes(a, b, iou_threshold=0.3) == [(1, 0), (0, 1)]
    assert match_boxes(a, b, iou_threshold=0.9) == []
    assert match_boxes([], b, 0.3) == [] and match_boxes(a, [], 0.3) == []


def test_a_single_odd_frame_does_not_flip_the_label():
    box = Box(200, 150, 120, 120)
    tracker = tracker_for([[box]] * 30)
    labels = []
    for index in range(30):
        if index == 15:
            tracker.classifier.override = one_hot("angry", certainty=1.0)
        faces = step(tracker, frame_with_squares([box]))
        labels.append(faces[0].emotion)
    assert labels == ["happy"] * 30

    # The same frames without smoothing do flip: the test above is not vacuous.
    unsmoothed = tracker_for([[box]] * 30, smoothing=0.0)
    for index in range(30):
        if index == 15:
            unsmoothed.classifier.override = one_hot("angry", certainty=1.0)
        faces = step(unsmoothed, frame_with_squares([box]))
        if index == 15:
            assert faces[0].emotion == "angry"


def test_emotions_read_every_other_frame_change_as_fast_as_those_read_every_frame():
    box = Box(200, 150, 120, 120)
    happy, sad = frame_with_squares([box]), frame_with_squares([box], values=[90])
    probabilities = {}
    for classify_every in (1, 2):
        tracker = tracker_for([[box]], detect_every=100, classify_every=classify_every)
        shown = [step(tracker, happy if index < 10 else sad) for index in range(20)]
        assert all(len(faces) == 1 for faces in shown)  # the face is drawn on every frame
        probabilities[classify_every] = [faces[0].probabilities for faces in shown]
        assert tracker.classifier.calls == 20 // classify_every
    # The smoothing is the same in time: a reading on every other frame counts for two frames.
    for index in range(0, 18, 2):
        np.testing.assert_allclose(probabilities[2][index], probabilities[1][index + 1], atol=1e-6)
    assert probabilities[2][18][EMOTIONS.index("sad")] > 0.5
    # In between, the label keeps the probabilities read last.
    np.testing.assert_array_equal(probabilities[2][11], probabilities[2][10])


def test_a_moving_face_keeps_its_id_and_its_smoothed_box_follows():
    boxes = [Box(100 + 6 * index, 120 + 2 * index, 120, 120) for index in range(40)]
    for detect_every in (1, 3):
        # The scripted detector answers per call, and it is only called on every Nth frame.
        tracker = tracker_for([[box] for box in boxes[::detect_every]], detect_every=detect_every)
        for index in range(40):
            faces = step(tracker, frame_with_squares([boxes[index]]))
            assert [face.id for face in faces] == [1]
        assert abs(faces[0].box.x - boxes[-1].x) < 20
        assert tracker.detector.calls == (40 if detect_every == 1 else 14)


@pytest.mark.parametrize("side", [120, 310])  # followed at a quarter and a tenth of its size
def test_between_detections_the_face_is_followed_not_left_behind(side):
    boxes = [Box(100 + 5 * index, 150 - 2 * index, side, side) for index in range(10)]
    tracker = tracker_for([[boxes[0]]], detect_every=10)
    for index in range(10):
        faces = step(tracker, frame_with_squares([boxes[index]]))
    assert tracker.detector.calls == 1
    assert abs(faces[0].box.x - boxes[-1].x) < 8  # only the box smoothing's lag


def test_two_faces_keep_separate_tracks_and_their_own_emotions():
    frames = 30
    left = [Box(40 + 3 * index, 150, 110, 110) for index in range(frames)]
    right = [Box(480 - 3 * index, 170, 100, 100) for index in range(frames)]
    # The detector lists the faces in a different order on alternate frames.
    boxes_per_frame = [[left[i], right[i]] if i % 2 else [right[i], left[i]] for i in range(frames)]
    tracker = tracker_for(boxes_per_frame)
    for index in range(frames):
        frame = frame_with_squares([left[index], right[index]], values=[230, 20])
        faces = step(tracker, frame)
        by_id = {face.id: face for face in faces}
        assert set(by_id) == {1, 2}
        right_id, left_id = 1, 2  # in the order of the first frame's detections
        assert abs(by_id[left_id].box.x - left[index].x) < 15
        assert abs(by_id[right_id].box.x - right[index].x) < 15
        assert by_id[left_id].emotion == "happy" and by_id[right_id].emotion == "sad"


def test_a_lost_face_lingers_a_few_frames_then_its_track_is_dropped_and_ids_are_not_reused():
    box = Box(200, 150, 120, 120)
    boxes_per_frame = [[box]] * 5 + [[]] * 12 + [[box]] * 2
    tracker = tracker_for(boxes_per_frame, max_missed_frames=4)
    ids = []
    for _ in boxes_per_frame:
        faces = step(tracker, frame_with_squares([box]))
        ids.append([face.id for face in faces])
    assert ids[:9] == [[1]] * 9  # 5 seen + 4 missed frames tolerated
    assert ids[9:17] == [[]] * 8
    assert ids[17:] == [[2], [2]]


def test_lingering_tracks_keep_their_last_probabilities():
    box = Box(200, 150, 120, 120)
    tracker = tracker_for([[box]] * 5, max_missed_frames=5)
    for _ in range(5):
        seen = step(tracker, frame_with_squares([box]))
    # The face is gone; what is left behind its box is dark, which the classifier calls sad.
    lingering = step(tracker, frame_with_squares([]))
    assert lingering[0].emotion == "happy"
    np.testing.assert_allclose(lingering[0].probabilities, seen[0].probabilities)


def test_five_synthetic_faces_and_a_sixth_beyond_max_faces():
    boxes = [Box(10 + 125 * index, 40 + 20 * index, 100 - index, 100 - index) for index in range(5)]
    sixth = Box(300, 380, 60, 60)
    tracker = tracker_for([[*boxes, sixth]] * 3)
    for _ in range(3):
        faces = step(tracker, frame_with_squares([*boxes, sixth]))
    assert [face.id for face in faces] == [1, 2, 3, 4, 5]
    assert [face.box for face in faces] == boxes


def test_a_change_of_frame_size_mid_stream_is_survived():
    box = Box(400, 300, 150, 150)
    tracker = tracker_for([[box]] * 3 + [[]] * 6, detect_every=3)
    for _ in range(5):
        step(tracker, frame_with_squares([box]))
    small = np.full((240, 320, 3), 60, dtype=np.uint8)  # the camera switched to a lower resolution
    for _ in range(4):
        faces = step(tracker, small)
        for face in faces:
            assert face.box.x + face.box.w <= 320 and face.box.y + face.box.h <= 240


class CropRecorder(BrightnessClassifier):
    def __init__(self):
        super().__init__()
        self.crops: list[np.ndarray] = []

    def predict_proba(self, faces: np.ndarray) -> np.ndarray:
        self.crops.append(faces.copy())
        return super().predict_proba(faces)


def test_a_turned_face_is_cropped_turned_upright_and_its_angle_smoothed():
    box = Box(200, 150, 120, 120)
    frame = frame_with_squares([box])
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    angles = iter([30.0, 10.0])
    recorder = CropRecorder()
    tracker = FaceTracker(
        recorder,
        TrackingSettings(detect_every=1, box_smoothing=0.5),
        detector=lambda gray: [Detection(box, next(angles, 10.0))],
    )

    tracker.update(gray)
    tracker.update(gray)

    np.testing.assert_array_equal(recorder.crops[0], crop_faces(gray, [Detection(box, 30.0)]))
    # The second detection's angle is smoothed as its box is: halfway from 30 to 10 degrees.
    np.testing.assert_array_equal(recorder.crops[1], crop_faces(gray, [Detection(box, 20.0)]))
