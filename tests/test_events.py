"""The detection-event schema: one row per face and frame, built from face results."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest

from emotion.batch import analyse_file
from emotion.engagement import engagement_score
from emotion.events import (
    BATCH_SCHEMA,
    EVENT_SCHEMA,
    SCHEMA_VERSION,
    EventSource,
    FrameFaces,
    VideoFaces,
    events_table,
    photo_frames,
    result_events,
    video_frames,
    with_date,
)
from emotion.faces import Box
from emotion.labels import EMOTIONS
from emotion.live import LiveSettings
from emotion.pipeline import Photo
from emotion.request import AnalysisRequest
from emotion.results import CSV_COLUMNS, Face, FaceRow
from emotion.video import process_video
from tests.conftest import REPO

SOURCE = EventSource("video", "lecture.mp4", "app", "classroom", "ab" * 32)
HAPPY = np.array([0.05, 0.0, 0.05, 0.6, 0.1, 0.1, 0.1], dtype=np.float32)
SAD = np.array([0.1, 0.0, 0.1, 0.0, 0.7, 0.0, 0.1], dtype=np.float32)


def test_events_hold_the_face_results_in_their_source_and_moment():
    frames = [
        FrameFaces(0, 0.0, 1_700_000_000.0, 640, 480, [Face(Box(64, 48, 128, 96), HAPPY, "happy", 1)]),
        FrameFaces(
            3,
            0.1,
            1_700_000_000.1,
            640,
            480,
            [Face(Box(70, 50, 128, 96), HAPPY, "happy", 1), Face(Box(320, 0, 320, 480), SAD, "sad", 2)],
        ),
    ]
    table = events_table(SOURCE, frames)
    assert table.schema == EVENT_SCHEMA
    rows = table.to_pylist()
    assert [(row["frame"], row["face_id"], row["emotion"]) for row in rows] == [
        (0, 1, "happy"),
        (3, 1, "happy"),
        (3, 2, "sad"),
    ]
    first, _, last = rows
    assert first["schema_version"] == SCHEMA_VERSION
    assert (first["origin"], first["source_kind"], first["source"]) == ("app", "video", "lecture.mp4")
    assert first["utc_time"].timestamp() == pytest.approx(1_700_000_000.0)
    assert last["time_s"] == pytest.approx(0.1)
    assert (first["x"], first["y"], first["w"], first["h"]) == (64, 48, 128, 96)
    relative = (first["x_rel"], first["y_rel"], first["w_rel"], first["h_rel"])
    assert relative == pytest.approx((0.1, 0.1, 0.2, 0.2))
    assert (last["x_rel"], last["w_rel"], last["h_rel"]) == pytest.approx((0.5, 0.5, 1.0))
    assert (first["frame_width"], first["frame_height"]) == (640, 480)
    assert [last[emotion] for emotion in EMOTIONS] == pytest.approx(SAD.tolist())
    assert last["confidence"] == pytest.approx(0.7)
    assert last["engagement"] == pytest.approx(engagement_score(SAD, "classroom"))
    assert (last["preset"], last["model_sha256"]) == ("classroom", "ab" * 32)


def test_the_face_result_columns_come_first_after_the_source_and_a_photo_has_no_frame():
    assert EVENT_SCHEMA.names[5 : 5 + len(CSV_COLUMNS)] == list(CSV_COLUMNS)
    photo = FrameFaces(None, None, 0.0, 200, 100, [Face(Box(10, 10, 50, 50), SAD, "sad", 1)])
    row = events_table(SOURCE._replace(kind="photo"), [photo]).to_pylist()[0]
    assert (row["frame"], row["time_s"], row["face_id"]) == (None, None, 1)


def test_no_faces_make_an_empty_table_of_the_schema():
    table = events_table(SOURCE, [FrameFaces(0, 0.0, 0.0, 10, 10, [])])
    assert table.num_rows == 0
    assert table.schema == EVENT_SCHEMA


def test_batch_rows_carry_their_utc_day():
    box = Box(0, 0, 8, 8)
    late_evening = 1_700_000_000.0 - 1_700_000_000.0 % 86400 + 86399.5  # 23:59:59.5 UTC
    frames = [
        FrameFaces(index, float(index), late_evening + index, 64, 64, [Face(box, HAPPY, "happy", 1)])
        for index in range(2)
    ]
    table = with_date(events_table(SOURCE, frames))
    assert table.schema == BATCH_SCHEMA
    assert table.column("date").to_pylist() == ["2023-11-14", "2023-11-15"]


def test_a_source_of_unknown_kind_or_preset_is_refused():
    with pytest.raises(ValueError, match="source kind"):
        SOURCE._replace(kind="fax").check()
    with pytest.raises(ValueError, match="preset"):
        SOURCE._replace(preset="party").check()
    assert SOURCE.check() == SOURCE


def test_readme_documents_every_column_and_the_version():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Detection events") :]
    section = section[: section.index("\n## ", 4)]
    assert f"version {SCHEMA_VERSION}" in section
    for name in [*BATCH_SCHEMA.names]:
        if name not in EMOTIONS:
            assert re.search(rf"`{name}`", section), name
    assert isinstance(EVENT_SCHEMA.field("utc_time").type, pa.TimestampType)


def test_a_photo_is_one_frame_of_numbered_faces():
    faces = [Face(Box(0, 0, 200, 200), HAPPY, "happy"), Face(Box(300, 0, 100, 100), SAD, "sad")]
    (frame,) = photo_frames(faces, 640, 480, 1_700_000_000.5)
    assert (frame.frame, frame.time_s, frame.utc_time, frame.width, frame.height) == (
        None,
        None,
        1_700_000_000.5,
        640,
        480,
    )
    assert [face.id for face in frame.faces] == [1, 2]


def test_a_video_is_grouped_by_frame_at_its_start_plus_the_frame_time_in_whole_microseconds():
    happy, sad = Face(Box(0, 0, 50, 50), HAPPY, "happy", 4), Face(Box(60, 0, 50, 50), SAD, "sad", 7)
    rows = [FaceRow(0, 0.0, happy), FaceRow(0, 0.0, sad), FaceRow(5, 1 / 6, happy)]
    started = 1_700_000_000_123_456 / 1e6
    frames = video_frames(rows, 320, 240, started)
    assert [(frame.frame, [face.id for face in frame.faces]) for frame in frames] == [(0, [4, 7]), (5, [4])]
    times_us = events_table(SOURCE, frames).column("utc_time").cast(pa.int64()).to_pylist()
    assert times_us == [1_700_000_000_123_456] * 2 + [1_700_000_000_123_456 + 166_667]


def test_the_page_and_the_batch_command_make_the_same_events_of_a_video(face_clip, classifier):
    settings = LiveSettings(detect_every=3, engagement_preset="general")
    result = process_video(face_clip, classifier, settings=settings)  # as the Video tab analyses it
    source = EventSource("video", str(face_clip), "batch", "general", classifier.sha256)
    page = events_table(source, video_frames(result.rows, result.width, result.height, 1_700_000_000.25))
    batch = analyse_file(face_clip, str(face_clip), 1_700_000_000_250, str(classifier.source), "general", 3)
    assert page.num_rows > 0
    assert batch.events.drop_columns(["date"]).equals(page)


def test_a_photo_or_a_video_result_becomes_its_source_and_frames():
    face = Face.from_probabilities(Box(10, 20, 30, 30), np.full(len(EMOTIONS), 1 / len(EMOTIONS)))
    request = AnalysisRequest(engagement_preset="classroom", origin="api")

    source, (frame,) = result_events(Photo([face], (640, 480), "haar"), "a.png", request, "ab" * 32, 5.0)
    assert source == EventSource("photo", "a.png", "api", "classroom", "ab" * 32)
    assert (frame.frame, frame.utc_time, frame.width, frame.height, frame.faces[0].id) == (
        None,
        5.0,
        640,
        480,
        1,
    )

    rows = [FaceRow(0, 0.0, face._replace(id=3)), FaceRow(2, 0.2, face._replace(id=3))]
    source, frames = result_events(VideoFaces(rows, 320, 240), "v.mp4", request, "ab" * 32, 5.0)
    assert source.kind == "video" and [frame.frame for frame in frames] == [0, 2]
    assert [frame.utc_time for frame in frames] == [5.0, 5.2]
