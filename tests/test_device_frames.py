import numpy as np
import pytest

from emotion.device_frames import InvalidDeviceMessage, parse_frames, record_frames
from emotion.labels import EMOTIONS
from emotion.live import LiveRecorder
from emotion.session import SessionStats

HAPPY = [0.01, 0.01, 0.01, 0.9, 0.02, 0.02, 0.03]


def frame(t: float, faces=None, **changes) -> dict:
    message = {
        "t": t,
        "w": 640,
        "h": 480,
        "ms": 9.5,
        "stages": {"detect": 6.0, "classify": 2.0},
        "faces": [{"id": 1, "box": [100, 80, 200, 200], "p": HAPPY}] if faces is None else faces,
    }
    return {**message, **changes}


def test_a_batch_becomes_faces_with_their_ids_boxes_and_probabilities():
    frames = parse_frames([frame(0.0), frame(0.033, faces=[])])
    assert [item.time_s for item in frames] == [0.0, 0.033]
    face = frames[0].faces[0]
    assert (face.id, tuple(face.box), face.emotion) == (1, (100, 80, 200, 200), "happy")
    assert face.probabilities.dtype == np.float32 and face.probabilities.sum() == pytest.approx(1.0)
    assert frames[0].latency_s == pytest.approx(0.0095)
    assert frames[0].stages_ms == {"detect": 6.0, "classify": 2.0}
    assert frames[1].faces == ()


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (frame(0.0, w=0), "width"),
        ({**frame(0.0), "t": float("nan")}, "time"),
        (frame(0.0, faces=[{"id": 1, "box": [600, 0, 200, 200], "p": HAPPY}]), "w"),
        (frame(0.0, faces=[{"id": 1, "box": [0, 0, 10, 10], "p": HAPPY[:6]}]), "probabilities"),
        (frame(0.0, faces=[{"id": 1, "box": [0, 0, 10, 10], "p": [0.5] * 7}]), "sum to 1"),
        (frame(0.0, faces=[{"id": "1", "box": [0, 0, 10, 10], "p": HAPPY}]), "id"),
        (frame(0.0, faces=[{"id": 1, "box": [0, 0, 10, 10], "p": HAPPY, "pixels": 1}] * 21), "at most"),
        ("frames", "not a list"),
    ],
)
def test_what_the_page_would_never_send_is_refused(message, match):
    with pytest.raises(InvalidDeviceMessage, match=match):
        parse_frames(message if isinstance(message, str) else [message])


def test_recorded_frames_feed_the_statistics_and_the_csv_as_the_webrtc_path_does():
    stats = SessionStats(log_interval_s=0.0)
    recorder = LiveRecorder()
    batch = [frame(index / 30) for index in range(31)]
    record_frames(parse_frames(batch), stats, recorder)
    snapshot = stats.snapshot()
    assert snapshot.frames == 31 and snapshot.face_frames == 31
    assert snapshot.fps == pytest.approx(30.0)  # the device's clock, not the batch's arrival
    assert snapshot.dominant_emotion == "happy" and snapshot.faces[0].id == 1
    assert snapshot.latency_ms == pytest.approx(9.5)
    lines = stats.to_csv().splitlines()
    assert lines[0].split(",")[-len(EMOTIONS) :] == list(EMOTIONS) and len(lines) == 32
