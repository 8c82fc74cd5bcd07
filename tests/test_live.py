"""The live analyzer: tracking, statistics and overlay together, on real and scripted frames."""

import threading

import av
import cv2
import numpy as np
import pytest
from av.video.reformatter import ColorRange

from emotion.engagement import engagement_score
from emotion.events import EventSource
from emotion.faces import Box, DetectorSettings
from emotion.history import DetectionLog, export_table
from emotion.labels import EMOTIONS
from emotion.live import LiveAnalyzer, LiveRecorder, LiveSettings
from emotion.results import CSV_COLUMNS, Face
from tests.test_tracking import FRAME_SHAPE, BrightnessClassifier, ScriptedDetector, frame_with_squares

WEBCAM = EventSource("webcam", "webcam A", "app", "general", "ab" * 32)
HAPPY = np.array([0.05, 0.0, 0.05, 0.6, 0.1, 0.1, 0.1], dtype=np.float32)


def analyzer_for(boxes_per_frame, **settings) -> LiveAnalyzer:
    settings.setdefault("detect_every", 1)
    return LiveAnalyzer(
        BrightnessClassifier(), LiveSettings(**settings), detector=ScriptedDetector(boxes_per_frame)
    )


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


def test_the_face_clip_is_tracked_as_one_face(classifier, face_clip):
    analyzer = LiveAnalyzer(classifier)
    ids = set()
    frames_with_faces = 0
    with av.open(str(face_clip)) as container:
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


def tracked(face_id: int) -> Face:
    return Face(Box(10, 10, 50, 50), HAPPY, "happy", face_id)


@pytest.fixture
def log(tmp_path):
    detection_log = DetectionLog(tmp_path / "history" / "detections.duckdb", interval_s=0.05)
    yield detection_log
    detection_log.close()


def test_live_recorder_writes_only_while_its_log_is_set(log):
    recorder = LiveRecorder()
    recorder.restart(WEBCAM)
    recorder.record([tracked(1)], 320, 240)  # the switch is off: nothing is kept
    recorder.log = log
    recorder.record([tracked(1), tracked(2)], 320, 240)
    recorder.record([], 320, 240)
    recorder.record([tracked(2)], 320, 240)
    recorder.log = None  # switched off: the next frame is not kept
    recorder.record([tracked(2)], 320, 240)
    assert log.flush()
    rows = log.read(export_table).to_pylist()
    assert [(row["frame"], row["face_id"]) for row in rows] == [(1, 1), (1, 2), (3, 2)]
    assert {row["source"] for row in rows} == {"webcam A"}
    assert rows[0]["w_rel"] == pytest.approx(50 / 320)


def test_a_webrtc_frame_is_analysed_and_drawn_in_its_own_format(classifier, face_clip):
    """process_frame on yuv420p frames finds the faces process finds on the same frames in BGR
    and shows the same overlay, leaving the frame it was given alone."""
    by_bgr, by_yuv = LiveAnalyzer(classifier), LiveAnalyzer(classifier)
    agreed = frames = 0
    with av.open(str(face_clip)) as container:
        for index, decoded in enumerate(container.decode(video=0)):
            frame = decoded.reformat(width=640, height=480, format="yuv420p")
            frame.pts = index
            given = frame.to_ndarray()
            bgr = frame.to_ndarray(format="bgr24")

            annotated, faces = by_bgr.process(bgr)
            shown, yuv_faces = by_yuv.process_frame(frame)

            assert (shown.format.name, shown.width, shown.height, shown.pts) == ("yuv420p", 640, 480, index)
            np.testing.assert_array_equal(frame.to_ndarray(), given)
            assert [face.id for face in yuv_faces] == [face.id for face in faces]
            for face, yuv_face in zip(faces, yuv_faces, strict=True):
                assert np.abs(np.subtract(face.box, yuv_face.box)).max() <= 8
                agreed += face.emotion == yuv_face.emotion
            frames += len(faces)
            overlay = np.abs(annotated.astype(int) - bgr).mean()
            assert np.abs(shown.to_ndarray(format="bgr24").astype(int) - annotated).mean() < 0.25 * overlay
    assert frames > 0 and agreed >= 0.9 * frames


@pytest.mark.parametrize("color_range", [ColorRange.MPEG, ColorRange.JPEG])
def test_the_tracker_sees_a_yuv420p_frame_in_the_grey_of_its_picture(astronaut_rgb, color_range):
    seen = []
    analyzer = LiveAnalyzer(BrightnessClassifier(), detector=lambda gray: seen.append(gray.copy()) or [])
    picture = np.ascontiguousarray(astronaut_rgb[:480, :400])
    frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
    frame = frame.reformat(format="yuv420p", dst_color_range=color_range)

    shown, _ = analyzer.process_frame(frame)

    difference = np.abs(seen[0].astype(int) - cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY))
    assert difference.mean() < 0.5 and np.percentile(difference, 99) <= 2  # rounding
    assert shown.color_range == frame.color_range


def test_frames_in_other_formats_are_analysed_through_bgr():
    analyzer = LiveAnalyzer(BrightnessClassifier(), detector=lambda gray: [])
    frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 128, np.uint8), format="bgr24")

    shown, faces = analyzer.process_frame(frame)

    assert faces == [] and (shown.width, shown.height) == (64, 48)
    assert analyzer.snapshot().frames == 1
