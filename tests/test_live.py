import csv
import io
import threading

import av
import cv2
import numpy as np
import pytest

from emotion.engagement import PRESETS, engagement_score
from emotion.faces import Box, DetectorSettings
from emotion.labels import EMOTIONS
from emotion.live import LiveAnalyzer, LiveSettings, SessionStats, iou_matrix, match_boxes
from emotion.results import CSV_COLUMNS, Face
from tests.conftest import FACE_CLIP

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
        return boxes


def frame_with_squares(boxes, values=None) -> np.ndarray:
    """Textured squares (so that they can be followed) of mean brightness `values` (220) on grey."""
    frame = np.full(FRAME_SHAPE, 60, dtype=np.uint8)
    for index, (x, y, w, h) in enumerate(boxes):
        # Smooth blobs, like a face's features, rather than pixel noise.
        coarse = np.random.default_rng(index).uniform(-30, 30, size=(6, 6)).astype(np.float32)
        texture = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
        frame[y : y + h, x : x + w] = np.clip((220 if values is None else values[index]) + texture, 0, 255)
    return frame


def analyzer_for(boxes_per_frame, **settings) -> LiveAnalyzer:
    settings.setdefault("detect_every", 1)
    return LiveAnalyzer(
        BrightnessClassifier(), LiveSettings(**settings), detector=ScriptedDetector(boxes_per_frame)
    )


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
    analyzer = analyzer_for([[box]] * 30)
    labels = []
    for index in range(30):
        if index == 15:
            analyzer.classifier.override = one_hot("angry", certainty=1.0)
        _, faces = analyzer.process(frame_with_squares([box]))
        labels.append(faces[0].emotion)
    assert labels == ["happy"] * 30

    # The same frames without smoothing do flip: the test above is not vacuous.
    unsmoothed = analyzer_for([[box]] * 30, smoothing=0.0)
    for index in range(30):
        if index == 15:
            unsmoothed.classifier.override = one_hot("angry", certainty=1.0)
        _, faces = unsmoothed.process(frame_with_squares([box]))
        if index == 15:
            assert faces[0].emotion == "angry"


def test_a_moving_face_keeps_its_id_and_its_smoothed_box_follows():
    boxes = [Box(100 + 6 * index, 120 + 2 * index, 120, 120) for index in range(40)]
    for detect_every in (1, 3):
        # The scripted detector answers per call, and it is only called on every Nth frame.
        analyzer = analyzer_for([[box] for box in boxes[::detect_every]], detect_every=detect_every)
        for index in range(40):
            _, faces = analyzer.process(frame_with_squares([boxes[index]]))
            assert [face.id for face in faces] == [1]
        assert abs(faces[0].box.x - boxes[-1].x) < 20
        assert analyzer._detector.calls == (40 if detect_every == 1 else 14)


def test_between_detections_the_face_is_followed_not_left_behind():
    boxes = [Box(100 + 5 * index, 150 + 2 * index, 120, 120) for index in range(10)]
    analyzer = analyzer_for([[boxes[0]]], detect_every=10)
    for index in range(10):
        _, faces = analyzer.process(frame_with_squares([boxes[index]]))
    assert analyzer._detector.calls == 1
    assert abs(faces[0].box.x - boxes[-1].x) < 8  # only the box smoothing's lag


def test_two_faces_keep_separate_tracks_and_their_own_emotions():
    frames = 30
    left = [Box(40 + 3 * index, 150, 110, 110) for index in range(frames)]
    right = [Box(480 - 3 * index, 170, 100, 100) for index in range(frames)]
    # The detector lists the faces in a different order on alternate frames.
    boxes_per_frame = [[left[i], right[i]] if i % 2 else [right[i], left[i]] for i in range(frames)]
    analyzer = analyzer_for(boxes_per_frame)
    for index in range(frames):
        frame = frame_with_squares([left[index], right[index]], values=[230, 20])
        _, faces = analyzer.process(frame)
        by_id = {face.id: face for face in faces}
        assert set(by_id) == {1, 2}
        right_id, left_id = 1, 2  # in the order of the first frame's detections
        assert abs(by_id[left_id].box.x - left[index].x) < 15
        assert abs(by_id[right_id].box.x - right[index].x) < 15
        assert by_id[left_id].emotion == "happy" and by_id[right_id].emotion == "sad"


def test_a_lost_face_lingers_a_few_frames_then_its_track_is_dropped_and_ids_are_not_reused():
    box = Box(200, 150, 120, 120)
    boxes_per_frame = [[box]] * 5 + [[]] * 12 + [[box]] * 2
    analyzer = analyzer_for(boxes_per_frame, max_missed_frames=4)
    ids = []
    for _ in boxes_per_frame:
        _, faces = analyzer.process(frame_with_squares([box]))
        ids.append([face.id for face in faces])
    assert ids[:9] == [[1]] * 9  # 5 seen + 4 missed frames tolerated
    assert ids[9:17] == [[]] * 8
    assert ids[17:] == [[2], [2]]


def test_lingering_tracks_keep_their_last_probabilities():
    box = Box(200, 150, 120, 120)
    analyzer = analyzer_for([[box]] * 5, max_missed_frames=5)
    for _ in range(5):
        _, seen = analyzer.process(frame_with_squares([box]))
    # The face is gone; what is left behind its box is dark, which the classifier calls sad.
    _, lingering = analyzer.process(frame_with_squares([]))
    assert lingering[0].emotion == "happy"
    np.testing.assert_allclose(lingering[0].probabilities, seen[0].probabilities)


def test_no_face_overlay_and_empty_statistics(classifier):
    analyzer = LiveAnalyzer(classifier)
    frame = np.full(FRAME_SHAPE, 128, dtype=np.uint8)
    annotated, faces = analyzer.process(frame)
    assert faces == []
    assert annotated.shape == frame.shape and annotated.dtype == np.uint8
    assert not np.array_equal(annotated, frame)  # "No face in view" is written on it
    np.testing.assert_array_equal(frame, 128)  # the input frame is left alone
    snapshot = analyzer.snapshot()
    assert snapshot.frames == 1 and snapshot.faces_in_view == 0
    assert snapshot.dominant_emotion is None and snapshot.mean_engagement is None
    assert set(snapshot.distribution.values()) == {0.0}
    assert snapshot.rolling_engagement == {30: None, 60: None}
    assert analyzer.log_csv().splitlines() == [",".join(CSV_COLUMNS)]


def test_five_synthetic_faces_and_a_sixth_beyond_max_faces():
    boxes = [Box(10 + 125 * index, 40 + 20 * index, 100 - index, 100 - index) for index in range(5)]
    sixth = Box(300, 380, 60, 60)
    analyzer = analyzer_for([[*boxes, sixth]] * 3)
    for _ in range(3):
        _, faces = analyzer.process(frame_with_squares([*boxes, sixth]))
    assert [face.id for face in faces] == [1, 2, 3, 4, 5]
    assert [face.box for face in faces] == boxes
    assert analyzer.snapshot().faces_in_view == 5


def test_five_real_faces_of_a_group_are_tracked_apart(classifier, group_photo_rgb):
    bgr = cv2.cvtColor(group_photo_rgb, cv2.COLOR_RGB2BGR)  # 12 faces; the largest 5 are kept
    settings = LiveSettings(detect_every=2, detector=DetectorSettings(), max_faces=5)
    analyzer = LiveAnalyzer(classifier, settings)
    for _ in range(4):
        annotated, faces = analyzer.process(bgr)
    assert [face.id for face in faces] == [1, 2, 3, 4, 5]
    assert len({face.box for face in faces}) == 5
    for face in faces:
        assert face.emotion in EMOTIONS
        assert face.probabilities.sum() == pytest.approx(1.0, abs=1e-4)
        assert 0.0 <= engagement_score(face.probabilities) <= 1.0
    assert annotated.shape == bgr.shape and not np.array_equal(annotated, bgr)


def test_the_face_clip_is_tracked_as_one_face(classifier):
    analyzer = LiveAnalyzer(classifier)
    ids = set()
    frames_with_faces = 0
    with av.open(str(FACE_CLIP)) as container:
        for frame in container.decode(video=0):
            bgr = frame.to_ndarray(width=640, height=480, format="bgr24")
            annotated, faces = analyzer.process(bgr)
            assert annotated.shape == (480, 640, 3)
            ids.update(face.id for face in faces)
            frames_with_faces += bool(faces)
    snapshot = analyzer.snapshot()
    assert frames_with_faces > 0.8 * snapshot.frames
    assert ids == {1}
    assert snapshot.dominant_emotion in EMOTIONS
    assert 0.0 <= snapshot.mean_engagement <= 1.0
    assert snapshot.latency_ms > 0.0


def face(face_id: int, emotion: str) -> Face:
    return Face(Box(10 * face_id, 0, 50, 50), one_hot(emotion, certainty=1.0), emotion, face_id)


def test_session_statistics_aggregate_the_whole_session_and_roll_over_the_last_seconds():
    stats = SessionStats("general", log_interval_s=0.0)
    happy, sad = PRESETS["general"].weights["happy"], PRESETS["general"].weights["sad"]
    for tenth in range(900):  # 90 s at 10 frames/s: sad for the first minute, happy after
        time_s = tenth / 10
        stats.record(time_s, [face(1, "sad" if time_s < 60 else "happy")], latency_s=0.004)
    stats.record(90.0, [], latency_s=0.002)
    snapshot = stats.snapshot()
    assert snapshot.frames == 901 and snapshot.face_frames == 900
    assert snapshot.emotion_counts["sad"] == 600 and snapshot.emotion_counts["happy"] == 300
    assert snapshot.distribution["sad"] == pytest.approx(2 / 3)
    assert sum(snapshot.distribution.values()) == pytest.approx(1.0)
    assert snapshot.dominant_emotion == "sad"
    assert snapshot.mean_engagement == pytest.approx((2 * sad + happy) / 3)
    assert snapshot.rolling_engagement[30] == pytest.approx(happy)  # seconds 61-89 were happy
    assert snapshot.rolling_engagement[60] == pytest.approx((30 * happy + 29 * sad) / 59, abs=1e-6)
    assert [point.time_s for point in snapshot.timeline] == list(range(31, 90))
    assert snapshot.timeline[-1].emotion == "happy"
    assert snapshot.latency_ms == pytest.approx(4.0)
    assert snapshot.faces == ()


def test_the_log_is_a_bounded_ring_and_samples_each_face_at_its_interval():
    stats = SessionStats(log_max_rows=500, log_interval_s=0.2)
    for index in range(30_000):  # 1000 s at 30 frames/s, two faces (ids change every 100 s)
        time_s = index / 30
        generation = int(time_s // 100)
        stats.record(time_s, [face(2 * generation + 1, "happy"), face(2 * generation + 2, "fear")], 0.001)
    rows = stats.log_rows()
    assert len(rows) == 500 == stats.snapshot().log_rows
    assert rows[-1].time_s > 999.7  # the newest rows are kept
    times_of_one_face = [row.time_s for row in rows if row.face.id == rows[-1].face.id]
    assert np.all(np.diff(times_of_one_face) >= 0.2 - 1e-9)
    assert len(stats._last_logged) == 2 and len(stats.snapshot().timeline) <= 60


def test_log_csv_has_one_row_per_logged_face_with_every_probability():
    stats = SessionStats(log_interval_s=0.0)
    stats.record(0.5, [face(1, "happy"), face(2, "surprise")], 0.001)
    stats.record(0.6, [face(1, "happy")], 0.001)
    table = list(csv.DictReader(io.StringIO(stats.to_csv())))
    assert len(table) == 3
    assert tuple(table[0]) == CSV_COLUMNS
    assert [row["frame"] for row in table] == ["0", "0", "1"]
    assert table[1]["face_id"] == "2" and table[1]["emotion"] == "surprise"
    assert float(table[1]["surprise"]) == 1.0 and float(table[1]["confidence"]) == 1.0
    assert float(table[2]["time_s"]) == 0.6


def test_process_and_snapshot_from_different_threads():
    box = Box(200, 150, 120, 120)
    analyzer = analyzer_for([[box]] * 300, log_max_rows=50, log_interval_s=0.0)
    frame = frame_with_squares([box])
    errors = []

    def stream():
        try:
            for _ in range(300):
                analyzer.process(frame)
        except Exception as error:  # surfaced by the assertion below
            errors.append(error)

    worker = threading.Thread(target=stream)
    worker.start()
    snapshots = []
    while worker.is_alive():
        snapshots.append(analyzer.snapshot())
        analyzer.log_csv()
    worker.join()
    assert errors == []
    frames_seen = [snapshot.frames for snapshot in snapshots]
    assert frames_seen == sorted(frames_seen)
    final = analyzer.snapshot()
    assert final.frames == 300 and final.log_rows == 50
    # A snapshot is a copy: changing it does not touch the analyzer.
    final.faces[0].probabilities[:] = 0
    assert analyzer.snapshot().faces[0].probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_reset_starts_a_new_session():
    box = Box(200, 150, 120, 120)
    analyzer = analyzer_for([[box]] * 4)
    analyzer.process(frame_with_squares([box]))
    analyzer.reset()
    assert analyzer.snapshot().frames == 0
    _, faces = analyzer.process(frame_with_squares([box]))
    assert faces[0].id == 1


def test_a_change_of_frame_size_mid_stream_is_survived():
    box = Box(400, 300, 150, 150)
    analyzer = analyzer_for([[box]] * 3 + [[]] * 6, detect_every=3)
    for _ in range(5):
        analyzer.process(frame_with_squares([box]))
    small = np.full((240, 320, 3), 60, dtype=np.uint8)  # the camera switched to a lower resolution
    for _ in range(4):
        _, faces = analyzer.process(small)
        for face in faces:
            assert face.box.x + face.box.w <= 320 and face.box.y + face.box.h <= 240


def test_bad_settings_and_frames_are_refused():
    with pytest.raises(ValueError, match="smoothing must be in"):
        LiveSettings(smoothing=1.0)
    with pytest.raises(ValueError, match="detect_every"):
        LiveSettings(detect_every=0)
    with pytest.raises(ValueError, match="Unknown engagement preset"):
        LiveSettings(engagement_preset="party")
    analyzer = analyzer_for([])
    with pytest.raises(ValueError, match="BGR uint8"):
        analyzer.process(np.zeros((48, 48), dtype=np.uint8))
