"""The detection log and the history read from it: events kept in DuckDB, or a batch Parquet table.

`DetectionLog` owns one DuckDB file (HISTORY_PATH). The webcam calls `submit` for each frame,
and the page's and the API's photos and videos go through `log_result`; `submit` only puts the
frames on a bounded queue and never blocks; a writer thread turns what has queued into one Arrow
table and appends it within BATCH_INTERVAL_S (sooner past BATCH_MAX_EVENTS), so a live stream
keeps its frame rate. Every visitor of an app process shares one log (the page caches it), so
concurrent sessions write through the same thread. A failed write (a full disk, a file another
process holds open) drops that batch, counts its events and becomes the log's `warning`; the
next batch tries again. The file is opened for each batch and each read and closed after it, so
between them another process can open it (DuckDB lets one process at a time hold a file). Past
`max_bytes` (MAX_LOG_BYTES) the log keeps nothing more and says so, until the history is
deleted. Its warnings name no server path: those go to the server's log.
`flush` waits for what is queued, `close` (also run when the interpreter exits) flushes and
stops the thread, and `delete_all` removes the database file itself, so no deleted row is left
in it.

The History tab reads through `read(query)` with a DuckDB connection on which `events` holds
EVENT_SCHEMA's columns, from the log or from a batch table (`ParquetHistory`); the query
functions below (summarise, export_table, ...) work on either.
"""

from __future__ import annotations

import atexit
import datetime as dt
import io
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute
import pyarrow.csv
import pyarrow.parquet

from emotion.events import EVENT_SCHEMA, Detections, EventSource, FrameFaces, events_table, result_events
from emotion.labels import EMOTIONS
from emotion.results import CSV_FORMULA_STARTS

if TYPE_CHECKING:
    from emotion.request import AnalysisRequest

logger = logging.getLogger(__name__)

QUEUE_MAX_ITEMS = 4096  # frames (or whole videos) waiting for the writer: 2 minutes of a 30 fps webcam
BATCH_INTERVAL_S = 1.0  # the writer appends what has queued at most this often
BATCH_MAX_EVENTS = 20_000  # or sooner, once this many events wait
COMMAND_TIMEOUT_S = 30.0  # flush and delete wait this long for the writer at most
MAX_LOG_BYTES = 1024**3  # 1 GB: over a hundred hours of one face at 30 fps (the README's size an hour)
POSITION_BINS = 20  # the heat map of face positions has this many cells across and down
TIMELINE_POINTS = 150  # detections over time are counted in at most about this many buckets
# Bucket widths for the timeline, in seconds: the first one that keeps it under TIMELINE_POINTS.
TIMELINE_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)

T = TypeVar("T")
Query = Callable[[duckdb.DuckDBPyConnection], T]


class HistoryError(RuntimeError):
    """The history cannot be read or changed; the message says why, for people."""


class LogStatus(NamedTuple):
    events_written: int  # by this process since it opened the log
    events_dropped: int  # not kept: the queue was full or a write failed
    warning: str | None  # why the last write failed; None once a write succeeds again


class _Command(NamedTuple):
    action: str  # "flush", "delete" or "stop"
    done: threading.Event
    errors: list  # the writer puts the exception here when the action failed


class DetectionLog:
    """A DuckDB file of detection events, appended to by one writer thread; thread-safe."""

    def __init__(
        self,
        path: str | Path,
        *,
        interval_s: float = BATCH_INTERVAL_S,
        queue_items: int = QUEUE_MAX_ITEMS,
        max_bytes: int = MAX_LOG_BYTES,
    ):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._interval_s = interval_s
        self._queue: queue.Queue = queue.Queue(maxsize=queue_items)
        self._lock = threading.RLock()  # the file, and the counts below
        self._written = 0
        self._dropped = 0
        self._warning: str | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="detection-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # a server shutdown writes what is queued

    # --- Producers -----------------------------------------------------------------------

    def submit(self, source: EventSource, frames: Sequence[FrameFaces]) -> bool:
        """Queue the frames' events for writing; False (and counted as dropped) when the queue is full."""
        if self._closed:
            return False
        try:
            self._queue.put_nowait((source, frames))
            return True
        except queue.Full:
            with self._lock:
                self._dropped += sum(len(frame.faces) for frame in frames)
                self._warning = "The detection log cannot keep up: some detections were not kept."
            return False

    def flush(self, timeout_s: float = COMMAND_TIMEOUT_S) -> bool:
        """Wait until everything queued so far is written (or has failed); False on timeout."""
        return self._command("flush", timeout_s)

    def delete_all(self, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        """Write what is queued, then delete the database file. Raises HistoryError."""
        if not self._command("delete", timeout_s):
            raise HistoryError("The history could not be deleted in time; try again.")

    def close(self, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        """Write what is queued and stop the writer; later submissions are dropped."""
        if self._closed:
            return
        self._command("stop", timeout_s)
        self._closed = True
        self._thread.join(timeout_s)
        atexit.unregister(self.close)

    def status(self) -> LogStatus:
        with self._lock:
            return LogStatus(self._written, self._dropped, self._warning)

    def _command(self, action: str, timeout_s: float) -> bool:
        if not self._thread.is_alive():
            return action != "delete"
        command = _Command(action, threading.Event(), [])
        try:
            self._queue.put(command, timeout=timeout_s)
        except queue.Full:
            return False
        if not command.done.wait(timeout_s):
            return False
        if command.errors:
            raise HistoryError(str(command.errors[0])) from command.errors[0]
        return True

    # --- Readers -------------------------------------------------------------------------

    def read(self, query: Query[T]) -> T:
        """query(connection) with the log's rows as `events`; an empty table before the first write."""
        with self._lock:
            if not self.path.exists():
                return _query_empty(query)
            try:
                connection = self._connect()
            except (duckdb.Error, OSError, HistoryError) as error:
                raise HistoryError(f"The detection log cannot be opened: {_reason(error)}") from error
            with connection:
                return query(connection)

    # --- The writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        pending: list[tuple[EventSource, Sequence[FrameFaces]]] = []
        pending_events = 0
        deadline = 0.0
        while True:
            timeout = max(0.0, deadline - time.monotonic()) if pending else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if isinstance(item, _Command) or item is None or pending_events >= BATCH_MAX_EVENTS:
                self._write(pending)
                pending, pending_events = [], 0
            if isinstance(item, _Command):
                try:
                    if item.action == "delete":
                        self._delete()
                except (duckdb.Error, OSError) as error:
                    item.errors.append(HistoryError(f"The history could not be deleted: {_reason(error)}"))
                item.done.set()
                if item.action == "stop":
                    return
            elif item is not None:
                if not pending:
                    deadline = time.monotonic() + self._interval_s
                pending.append(item)
                pending_events += sum(len(frame.faces) for frame in item[1])

    def _write(self, pending: list[tuple[EventSource, Sequence[FrameFaces]]]) -> None:
        batch = pa.concat_tables(
            [events_table(source, frames) for source, frames in pending] or [EVENT_SCHEMA.empty_table()]
        )
        if batch.num_rows == 0:
            return
        with self._lock:
            if self._size() >= self.max_bytes:
                self._dropped += batch.num_rows
                self._warning = (
                    f"The detection log is full (its limit is {self.max_bytes / 1e6:,.0f} MB): new "
                    "detections are not kept. Delete the history in the History tab to start again."
                )
                return
            try:
                with self._connect() as connection:
                    connection.register("batch", batch)
                    connection.execute("INSERT INTO events SELECT * FROM batch").fetchall()
            except (duckdb.Error, OSError, HistoryError) as error:
                self._dropped += batch.num_rows
                self._warning = (
                    f"The detection log could not be written ({_reason(error)}); detections are not kept."
                )
                logger.warning("Dropped %d detection events", batch.num_rows)
                return
            self._written += batch.num_rows
            self._warning = None

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """The file, opened afresh with its table; the caller closes it (`with`) when done."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = duckdb.connect(str(self.path))
        try:
            _create_events_table(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def _files(self) -> tuple[Path, Path]:
        """The database file and its write-ahead log."""
        return self.path, self.path.with_name(self.path.name + ".wal")

    def _size(self) -> int:
        """The bytes the log takes on disk, its write-ahead log included."""
        return sum(path.stat().st_size for path in self._files() if path.exists())

    def _delete(self) -> None:
        with self._lock:
            for path in self._files():
                path.unlink(missing_ok=True)
            logger.info("Deleted the detection log %s", self.path)


def log_result(
    log: DetectionLog | None,
    result: Detections,
    *,
    name: str,
    request: AnalysisRequest,
    model_sha256: str,
    utc_time: float,
    flush: bool = False,
) -> None:
    """A photo's or a video's faces to the detection log, when one is kept (None: it is off):
    how the page and the API log every result. flush: wait until they are written, for the
    History tab opened next."""
    if log is None:
        return
    source, frames = result_events(result, name, request, model_sha256, utc_time)
    if not any(frame.faces for frame in frames):
        return
    log.submit(source, frames)
    if flush:
        log.flush()


def _create_events_table(connection: duckdb.DuckDBPyConnection) -> None:
    connection.register("empty_events", EVENT_SCHEMA.empty_table())
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS events AS SELECT * FROM empty_events").fetchall()
    finally:
        connection.unregister("empty_events")
    columns = [row[0] for row in connection.execute("DESCRIBE events").fetchall()]
    if columns != EVENT_SCHEMA.names:
        raise HistoryError("the file holds a table of another shape; give HISTORY_PATH a new file")


def _query_empty(query: Query[T]) -> T:
    with duckdb.connect() as connection:
        _create_events_table(connection)
        return query(connection)


def _reason(error: BaseException) -> str:
    """Why a read or write failed, for people: no server path (the full error goes to the server's log)."""
    text = str(error)
    logger.warning("Detection log: %s", text)
    if "lock" in text.lower():
        return "the file is in use by another program"
    if "No space left" in text or "File too large" in text:
        return "the disk is full"
    if isinstance(error, PermissionError) or "Permission denied" in text:
        return "the server may not write there"
    if isinstance(error, HistoryError):
        return text
    return "the file cannot be opened or written (the server's log says why)"


class ParquetHistory:
    """A Parquet event table written by `python -m emotion batch`, read-only."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @property
    def events_folder(self) -> Path:
        return self.folder / "events"

    def read(self, query: Query[T]) -> T:
        files = sorted(self.events_folder.rglob("*.parquet")) if self.events_folder.is_dir() else []
        if not files:
            return _query_empty(query)
        with duckdb.connect() as connection:
            try:
                connection.read_parquet([str(file) for file in files], hive_partitioning=True).create_view(
                    "events"
                )
            except duckdb.Error as error:
                raise HistoryError(f"The batch table cannot be read: {_reason(error)}") from error
            return query(connection)


# --- Queries over `events` ---------------------------------------------------------------


class Selection(NamedTuple):
    """Which events: from these sources (none: all) between start and end (None: open)."""

    sources: tuple[str, ...] = ()
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def where(self) -> tuple[str, list]:
        """A SQL condition on `events` and its parameters."""
        conditions, parameters = ["TRUE"], []
        if self.sources:
            conditions.append("list_contains(?, source)")
            parameters.append(list(self.sources))
        if self.start is not None:
            conditions.append("utc_time >= ?")
            parameters.append(self.start)
        if self.end is not None:
            conditions.append("utc_time <= ?")
            parameters.append(self.end)
        return " AND ".join(conditions), parameters


ALL_EVENTS = Selection()


class Overview(NamedTuple):
    """The whole history: what the filters can choose from."""

    events: int
    sources: tuple[str, ...]  # oldest first
    first: dt.datetime | None  # UTC
    last: dt.datetime | None


class Summary(NamedTuple):
    """A selection of events, summarised for the History tab's charts and table."""

    events: int
    mean_engagement: float | None  # None when empty
    distribution: Mapping[str, float]  # share of events per emotion, in EMOTIONS order; all 0 when empty
    positions: pd.DataFrame  # column, row (0..POSITION_BINS-1, of the face's centre), events
    timeline: pd.DataFrame  # time (UTC bucket start), detections, engagement
    bucket_s: int  # the timeline's bucket width
    per_source: pd.DataFrame  # source, kind, detections, frames, first, last, engagement, emotion


def overview(connection: duckdb.DuckDBPyConnection) -> Overview:
    events, first, last = connection.execute(
        "SELECT count(*), min(utc_time), max(utc_time) FROM events"
    ).fetchone()
    sources = connection.execute(
        "SELECT source FROM events GROUP BY source ORDER BY min(utc_time)"
    ).fetchall()
    return Overview(events, tuple(row[0] for row in sources), _utc(first), _utc(last))


def summarise(connection: duckdb.DuckDBPyConnection, selection: Selection = ALL_EVENTS) -> Summary:
    where, parameters = selection.where()
    counts = dict(
        connection.execute(
            f"SELECT emotion, count(*) FROM events WHERE {where} GROUP BY emotion", parameters
        ).fetchall()
    )
    total = sum(counts.values())
    distribution = {emotion: (counts.get(emotion, 0) / total if total else 0.0) for emotion in EMOTIONS}
    last_bin = POSITION_BINS - 1
    positions = connection.execute(
        f"""SELECT least(floor((x_rel + w_rel / 2) * {POSITION_BINS}), {last_bin})::INTEGER AS column,
                   least(floor((y_rel + h_rel / 2) * {POSITION_BINS}), {last_bin})::INTEGER AS row,
                   count(*) AS events
            FROM events WHERE {where} GROUP BY ALL ORDER BY ALL""",
        parameters,
    ).df()
    first, last, mean_engagement = connection.execute(
        f"SELECT min(utc_time), max(utc_time), avg(engagement) FROM events WHERE {where}", parameters
    ).fetchone()
    span_s = (last - first).total_seconds() if first is not None else 0.0
    bucket_s = next(
        (step for step in TIMELINE_STEPS_S if span_s / step <= TIMELINE_POINTS), TIMELINE_STEPS_S[-1]
    )
    timeline = connection.execute(
        f"""SELECT time_bucket(to_seconds(?), utc_time) AS time, count(*) AS detections,
                   avg(engagement) AS engagement
            FROM events WHERE {where} GROUP BY ALL ORDER BY ALL""",
        [bucket_s, *parameters],
    ).df()
    per_source = connection.execute(
        f"""SELECT source, any_value(source_kind) AS kind, count(*) AS detections,
                   count(DISTINCT utc_time) AS frames, min(utc_time) AS first, max(utc_time) AS last,
                   avg(engagement) AS engagement, mode(emotion) AS emotion
            FROM events WHERE {where} GROUP BY source ORDER BY first""",
        parameters,
    ).df()
    return Summary(total, mean_engagement, distribution, positions, timeline, bucket_s, per_source)


def export_table(connection: duckdb.DuckDBPyConnection, selection: Selection = ALL_EVENTS) -> pa.Table:
    """The selected events, EVENT_SCHEMA's columns, oldest first."""
    where, parameters = selection.where()
    columns = ", ".join(f'"{name}"' for name in EVENT_SCHEMA.names)
    query = f"SELECT {columns} FROM events WHERE {where} ORDER BY utc_time, source, frame, face_id"
    return connection.sql(query, params=parameters).to_arrow_table().cast(EVENT_SCHEMA)


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pyarrow.parquet.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def csv_bytes(table: pa.Table) -> bytes:
    """The table as CSV, its text cells neutralised as emotion.results.csv_text does."""
    formula = "^[" + re.escape("".join(CSV_FORMULA_STARTS)) + "]"
    for index, field in enumerate(table.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            column = table.column(index)
            neutralised = pyarrow.compute.binary_join_element_wise("'", column, "")
            safe = pyarrow.compute.if_else(
                pyarrow.compute.match_substring_regex(column, formula), neutralised, column
            )
            table = table.set_column(index, field, safe)
    buffer = io.BytesIO()
    pyarrow.csv.write_csv(table, buffer)
    return buffer.getvalue()


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    return None if moment is None else moment.astimezone(dt.UTC)
