"""The detection log in DuckDB, its writer thread, and the History tab's queries."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.csv
import pyarrow.parquet
import pytest

from emotion.engagement import engagement_score
from emotion.events import EVENT_SCHEMA, EventSource, FrameFaces, events_table, with_date
from emotion.faces import Box
from emotion.history import (
    POSITION_BINS,
    DetectionLog,
    ParquetHistory,
    Selection,
    csv_bytes,
    export_table,
    log_result,
    overview,
    parquet_bytes,
    summarise,
)
from emotion.pipeline import Photo
from emotion.request import AnalysisRequest
from emotion.results import Face
from tests.conftest import REPO

START = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
HAPPY = np.array([0.05, 0.0, 0.05, 0.6, 0.1, 0.1, 0.1], dtype=np.float32)
WEBCAM = EventSource("webcam", "webcam A", "app", "general", "ab" * 32)
VIDEO = EventSource("video", "talk.mp4", "app", "general", "ab" * 32)


CENTRE = Box(160, 120, 160, 120)


def frames(count: int, start: float = START, box: Box = CENTRE, first_index: int = 0):
    """One face per frame at 10 frames a second, in a 640x480 frame."""
    return [
        FrameFaces(
            first_index + index, index / 10, start + index / 10, 640, 480, [Face(box, HAPPY, "happy", 1)]
        )
        for index in range(count)
    ]


@pytest.fixture
def log(tmp_path):
    detection_log = DetectionLog(tmp_path / "history" / "detections.duckdb", interval_s=0.05)
    yield detection_log
    detection_log.close()


def count(log) -> int:
    return log.read(lambda connection: connection.execute("SELECT count(*) FROM events").fetchone()[0])


def test_submitted_frames_are_written_in_batches_and_read_back(log):
    assert not log.path.exists()  # nothing is created before something is logged
    assert log.read(overview).events == 0
    assert log.submit(WEBCAM, frames(30))
    assert log.submit(VIDEO, frames(20, start=START + 60))
    assert log.flush()
    assert count(log) == 50
    assert log.status() == (50, 0, None)
    whole = log.read(overview)
    assert whole.sources == ("webcam A", "talk.mp4")
    assert whole.first == dt.datetime.fromtimestamp(START, dt.UTC)
    assert log.read(export_table).equals(
        pyarrow.concat_tables(
            [events_table(WEBCAM, frames(30)), events_table(VIDEO, frames(20, start=START + 60))]
        )
    )


def test_concurrent_sessions_write_every_event(log):
    def session(number: int) -> None:
        source = WEBCAM._replace(name=f"webcam {number}")
        for second in range(20):
            log.submit(source, frames(5, start=START + second, first_index=5 * second))

    threads = [threading.Thread(target=session, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.flush()
    assert count(log) == 4 * 20 * 5
    per_source = log.read(summarise).per_source
    assert sorted(per_source["source"]) == [f"webcam {number}" for number in range(4)]
    assert set(per_source["detections"]) == {100}


def test_deleting_leaves_no_rows_and_no_file(log):
    log.submit(WEBCAM, frames(10))
    log.delete_all()  # also writes what was queued first
    assert not log.path.exists()
    assert count(log) == 0
    log.submit(WEBCAM, frames(3))
    assert log.flush()
    assert count(log) == 3


def test_a_full_queue_drops_and_says_so(tmp_path):
    log = DetectionLog(tmp_path / "d.duckdb", queue_items=1, interval_s=30.0)
    try:
        accepted = [log.submit(WEBCAM, frames(2)) for _ in range(50)]
        assert not all(accepted)
        status = log.status()
        assert status.events_dropped == 2 * accepted.count(False)
        assert "cannot keep up" in status.warning
    finally:
        log.close()


@contextlib.contextmanager
def held_by_another_process(path: Path) -> Iterator[None]:
    """The DuckDB file at `path` open in another process (which holds its lock) meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    hold_the_file = (
        f"import duckdb, sys; connection = duckdb.connect({str(path)!r}); "
        "print('open', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold_the_file], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline().strip() == b"open"
        yield
    finally:
        holder.communicate(b"")


def test_a_file_locked_by_another_process_is_a_warning_until_it_is_free(log):
    with held_by_another_process(log.path):
        log.submit(WEBCAM, frames(5))
        assert log.flush()
        status = log.status()
        assert status.events_dropped == 5
        assert "in use by another program" in status.warning
    log.submit(WEBCAM, frames(7))
    assert log.flush()
    assert log.status() == (7, 5, None)
    assert count(log) == 7


def test_another_process_can_read_the_log_between_batches(log):
    log.submit(WEBCAM, frames(5))
    assert log.flush()
    reader = subprocess.run(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; connection = duckdb.connect(sys.argv[1], read_only=True); "
            "print(connection.execute('SELECT count(*) FROM events').fetchone()[0])",
            str(log.path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert reader.stdout.strip() == "5", reader.stderr
    log.submit(WEBCAM, frames(2, first_index=5))
    assert log.flush() and count(log) == 7


def test_a_full_log_keeps_nothing_more_and_says_so_until_deleted(tmp_path):
    log = DetectionLog(tmp_path / "d.duckdb", interval_s=0.01, max_bytes=1)  # full after one batch
    try:
        log.submit(WEBCAM, frames(5))
        assert log.flush() and log.status() == (5, 0, None)
        log.submit(WEBCAM, frames(3, first_index=5))
        assert log.flush()
        status = log.status()
        assert status.events_dropped == 3 and "The detection log is full" in status.warning
        assert "Delete the history" in status.warning and count(log) == 5
        log.delete_all()
        log.submit(WEBCAM, frames(2))
        assert log.flush() and count(log) == 2
    finally:
        log.close()


def test_what_went_wrong_is_said_without_server_paths(tmp_path, caplog):
    (tmp_path / "a file").write_text("not a folder")
    log = DetectionLog(tmp_path / "a file" / "d.duckdb", interval_s=0.01)
    try:
        log.submit(WEBCAM, frames(1))
        assert log.flush()
        warning = log.status().warning
        assert "could not be written" in warning and str(tmp_path) not in warning
        assert str(tmp_path) in caplog.text  # the server's log says where
    finally:
        log.close()


# Run in the checkout's root, where `tests` is importable.
CHILD_PRELUDE = """
from tests.test_history import WEBCAM, frames
from emotion.history import DetectionLog
log = DetectionLog({path!r}, interval_s=60.0)
"""


def run_child(tmp_path: Path, body: str) -> str:
    script = CHILD_PRELUDE.format(path=str(tmp_path / "child.duckdb")) + textwrap.dedent(body)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_full_disk_is_a_warning_and_the_writer_carries_on(tmp_path):
    output = run_child(
        tmp_path,
        """
        import resource, signal
        log.submit(WEBCAM, frames(5))
        log.flush()  # the file exists now, with room for no more
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writing past the limit fails instead
        size = __import__("os").path.getsize(log.path)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        log.submit(WEBCAM, frames(30_000, first_index=5))
        log.flush()
        print(log.status().warning)
        log.submit(WEBCAM, frames(1))
        print(log.flush())
        """,
    )
    warning, flushed = output.strip().splitlines()
    assert "the disk is full" in warning
    assert flushed == "True"


def test_the_queue_is_written_when_the_process_exits(tmp_path):
    run_child(tmp_path, "log.submit(WEBCAM, frames(12))  # and exit at once, without flush or close\n")
    with duckdb.connect(str(tmp_path / "child.duckdb"), read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM events").fetchone()[0] == 12


def test_a_file_of_another_shape_is_refused(tmp_path):
    path = tmp_path / "other.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE TABLE events (a INTEGER)")
    log = DetectionLog(path, interval_s=0.01)
    try:
        log.submit(WEBCAM, frames(1))
        assert log.flush()
        assert "another shape" in log.status().warning
    finally:
        log.close()


@pytest.fixture
def filled(log):
    log.submit(WEBCAM, frames(50, box=Box(0, 0, 32, 24)))  # top-left corner, 5 s
    log.submit(
        VIDEO, frames(20, start=START + 3600, box=Box(608, 456, 32, 24))
    )  # bottom-right, an hour later
    assert log.flush()
    return log


def test_summary_counts_emotions_positions_time_and_sources(filled):
    summary = filled.read(summarise)
    assert summary.events == 70
    assert summary.distribution["happy"] == 1.0
    assert sum(summary.distribution.values()) == 1.0
    positions = {(row.column, row.row): row.events for row in summary.positions.itertuples()}
    assert positions == {(0, 0): 50, (POSITION_BINS - 1, POSITION_BINS - 1): 20}
    assert summary.timeline["detections"].sum() == 70
    assert summary.bucket_s == 30  # 62 minutes in at most 150 buckets
    assert summary.timeline["engagement"].iloc[0] == pytest.approx(engagement_score(HAPPY, "general"))
    table = summary.per_source.set_index("source")
    assert table.loc["webcam A", "detections"] == 50
    assert table.loc["talk.mp4", "kind"] == "video"
    assert table.loc["talk.mp4", "frames"] == 20
    assert table.loc["webcam A", "emotion"] == "happy"


def test_selection_filters_by_source_and_time(filled):
    only_video = Selection(sources=("talk.mp4",))
    assert filled.read(lambda connection: summarise(connection, only_video)).events == 20
    first_two_seconds = Selection(
        start=dt.datetime.fromtimestamp(START, dt.UTC), end=dt.datetime.fromtimestamp(START + 1.95, dt.UTC)
    )
    assert filled.read(lambda connection: summarise(connection, first_two_seconds)).events == 20
    nothing = Selection(sources=("webcam A",), start=dt.datetime.fromtimestamp(START + 3600, dt.UTC))
    empty = filled.read(lambda connection: summarise(connection, nothing))
    assert empty.events == 0
    assert set(empty.distribution.values()) == {0.0}
    assert empty.timeline.empty


def test_exports_round_trip_as_parquet_and_csv(filled):
    selection = filled.read(lambda connection: export_table(connection, Selection(sources=("webcam A",))))
    assert selection.num_rows == 50
    assert pyarrow.parquet.read_table(io.BytesIO(parquet_bytes(selection))).equals(selection)
    from_csv = pyarrow.csv.read_csv(io.BytesIO(csv_bytes(selection)))
    assert from_csv.column_names == EVENT_SCHEMA.names
    assert from_csv.num_rows == 50


def test_csv_exports_neutralise_cells_a_spreadsheet_would_run(tmp_path):
    log = DetectionLog(tmp_path / "d.duckdb", interval_s=0.01)
    names = ['=HYPERLINK("http://example.org","x")', "+1", "-2+3", "@SUM(A1)", "\tlecture", "plain.mp4"]
    try:
        for name in names:
            log.submit(VIDEO._replace(name=name), frames(1))
        assert log.flush()
        rows = list(csv.DictReader(io.StringIO(csv_bytes(log.read(export_table)).decode())))
    finally:
        log.close()
    assert sorted(row["source"] for row in rows) == sorted(
        ["'" + name if name != "plain.mp4" else name for name in names]
    )
    assert all(float(row["x"]) >= 0 for row in rows)  # numbers stay numbers


def test_a_batch_table_is_read_like_the_log(tmp_path):
    assert ParquetHistory(tmp_path / "missing").read(overview).events == 0
    table = with_date(
        pyarrow.concat_tables(
            [events_table(WEBCAM._replace(origin="batch"), frames(8)), events_table(VIDEO, frames(4))]
        )
    )
    pyarrow.dataset.write_dataset(
        table,
        tmp_path / "out" / "events",
        format="parquet",
        partitioning=["source_kind", "date"],
        partitioning_flavor="hive",
    )
    history = ParquetHistory(tmp_path / "out")
    assert history.read(overview).events == 12
    exported = history.read(export_table)
    assert exported.schema == EVENT_SCHEMA
    assert sorted(exported.column("source_kind").to_pylist()) == ["video"] * 4 + ["webcam"] * 8


def test_a_result_is_logged_as_its_request_names_it_and_nothing_without_faces(log):
    face = Face.from_probabilities(CENTRE, np.full(7, 1 / 7))
    request = AnalysisRequest(engagement_preset="classroom", origin="api")
    logged = {"name": "a.png", "request": request, "model_sha256": "ab" * 32, "utc_time": START}

    log_result(None, Photo([face], (640, 480), "blazeface"), **logged)  # the log is off
    log_result(log, Photo([], (640, 480), "blazeface"), **logged, flush=True)
    assert count(log) == 0
    log_result(log, Photo([face], (640, 480), "blazeface"), **logged, flush=True)
    assert log.read(
        lambda connection: connection.execute(
            "SELECT source_kind, source, origin, preset FROM events"
        ).fetchall()
    ) == [("photo", "a.png", "api", "classroom")]
