"""Session statistics: aggregates over the whole session and the last seconds, and the bounded log."""

import csv
import io

import numpy as np
import pytest

from emotion.engagement import PRESETS
from emotion.faces import Box
from emotion.results import CSV_COLUMNS, Face
from emotion.session import SessionStats
from tests.test_tracking import one_hot


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
