"""Detection events: one row per face and analysed frame, the data the detection log keeps and
the batch command writes.

An event is a face result exactly as the CSV export has it (emotion.results.CSV_COLUMNS: frame,
time, face id, box, emotion, confidence and the 7 probabilities) placed in its source and its
moment: which webcam session, video or photo it came from, when in UTC, how large the frame
was, the engagement under which preset, and the model that read it. EVENT_SCHEMA is the one
definition of the columns; the README documents them under "Detection events", and
SCHEMA_VERSION changes whenever a column does. `photo_frames` and `video_frames` turn a photo's
or a video's face results into the frames of events; `result_events` turns any result (a photo,
`VideoFaces`) into its source and frames, for the page, the API and the batch command alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar, NamedTuple, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from emotion.engagement import get_preset
from emotion.labels import EMOTIONS
from emotion.results import CSV_COLUMNS, Face, FaceRow, numbered

if TYPE_CHECKING:
    from emotion.request import AnalysisRequest

SCHEMA_VERSION = 1
SOURCE_KINDS = ("webcam", "video", "photo")
ORIGINS = ("app", "batch", "api")  # the page, `python -m emotion batch`, the HTTP API (`serve`)
PARTITION_COLUMNS = ("source_kind", "date")  # of a batch event table, in its folder names

# The face result's CSV columns, typed. Probabilities are kept as the model gave them, not rounded.
_FACE_RESULT_TYPES = {
    "frame": pa.int32(),  # null for a photo
    "time_s": pa.float64(),  # null for a photo
    "face_id": pa.int32(),
    **{name: pa.int32() for name in ("x", "y", "w", "h")},
    "emotion": pa.string(),
    "confidence": pa.float32(),
    **{emotion: pa.float32() for emotion in EMOTIONS},
}
EVENT_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int16()),
        ("origin", pa.string()),
        ("source_kind", pa.string()),
        ("source", pa.string()),
        ("utc_time", pa.timestamp("us", tz="UTC")),
        *[(name, _FACE_RESULT_TYPES[name]) for name in CSV_COLUMNS],
        ("x_rel", pa.float32()),
        ("y_rel", pa.float32()),
        ("w_rel", pa.float32()),
        ("h_rel", pa.float32()),
        ("frame_width", pa.int32()),
        ("frame_height", pa.int32()),
        ("engagement", pa.float32()),
        ("preset", pa.string()),
        ("model_sha256", pa.string()),
    ]
)
# A batch table adds the day of utc_time (YYYY-MM-DD, UTC) as a partition column.
BATCH_SCHEMA = EVENT_SCHEMA.append(pa.field("date", pa.string()))
ERROR_SCHEMA = pa.schema([("source", pa.string()), ("error", pa.string())])


class EventSource(NamedTuple):
    """What every event of one source shares."""

    kind: str  # one of SOURCE_KINDS
    name: str  # a webcam session's label, an uploaded file's name, a batch input's path or URI
    origin: str  # one of ORIGINS
    preset: str  # the engagement preset, a key of emotion.engagement.PRESETS
    model_sha256: str

    def check(self) -> EventSource:
        if self.kind not in SOURCE_KINDS or self.origin not in ORIGINS:
            raise ValueError(f"Unknown source kind {self.kind!r} or origin {self.origin!r}")
        get_preset(self.preset)
        return self


class FrameFaces(NamedTuple):
    """The faces of one analysed frame, or of a photo."""

    frame: int | None  # the frame's 0-based index; None for a photo
    time_s: float | None  # the frame's time since the source began; None for a photo
    utc_time: float  # seconds since the epoch
    width: int  # of the analysed frame, in pixels
    height: int
    faces: Sequence[Face]  # each with its face_id as .id (see emotion.results.numbered)


def photo_frames(faces: Sequence[Face], width: int, height: int, utc_time: float) -> list[FrameFaces]:
    """A photo's faces as its one frame of events, numbered as its JSON and CSV number them.
    width, height: the upright photo's, in the boxes' pixels."""
    return [FrameFaces(None, None, utc_time, width, height, numbered(faces))]


def video_frames(rows: Iterable[FaceRow], width: int, height: int, started_utc: float) -> list[FrameFaces]:
    """A video's faces frame by frame, from its rows (one per frame and face, in frame order).

    width, height: the analysed frames', in the boxes' pixels. A frame's utc_time is
    `started_utc` plus the frame's time in the video, added in whole microseconds so that the
    same video and start give the same times on every machine.
    """
    started_us = round(started_utc * 1e6)
    frames: dict[int, FrameFaces] = {}
    for row in rows:
        if row.frame not in frames:
            utc_time = (started_us + round(row.time_s * 1e6)) / 1e6
            frames[row.frame] = FrameFaces(row.frame, row.time_s, utc_time, width, height, [])
        frames[row.frame].faces.append(row.face)
    return list(frames.values())


class VideoFaces(NamedTuple):
    """A video's faces, one row per (frame, face) in frame order, in frames of width x height."""

    rows: Sequence[FaceRow]
    width: int
    height: int

    kind = "video"  # of its detection events

    def frames(self, utc_time: float) -> list[FrameFaces]:
        """The rows as the frames of events of a video that began at `utc_time` (see `video_frames`)."""
        return video_frames(self.rows, self.width, self.height, utc_time)


class Detections(Protocol):
    """A result whose faces become detection events: a photo (emotion.pipeline.Photo), a video."""

    kind: ClassVar[str]  # one of SOURCE_KINDS

    def frames(self, utc_time: float) -> list[FrameFaces]: ...


def result_events(
    result: Detections, name: str, request: AnalysisRequest, model_sha256: str, utc_time: float
) -> tuple[EventSource, list[FrameFaces]]:
    """The source and frames of one result's events: a photo analysed, or a video begun, at
    `utc_time` (seconds since the epoch), named `name`, as `request` asked, by that model."""
    return request.source(result.kind, name, model_sha256), result.frames(utc_time)


def events_table(source: EventSource, frames: Iterable[FrameFaces]) -> pa.Table:
    """EVENT_SCHEMA rows, one per (frame, face), in the frames' and faces' order."""
    rows = [(frame, face) for frame in frames for face in frame.faces]
    count = len(rows)
    boxes = np.array([face.box for _, face in rows], dtype=np.int32).reshape(count, 4)
    sizes = np.array([(frame.width, frame.height) for frame, _ in rows], dtype=np.int32).reshape(count, 2)
    probabilities = np.array([face.probabilities for _, face in rows], dtype=np.float32)
    probabilities = probabilities.reshape(count, len(EMOTIONS))
    relative = (boxes / np.tile(sizes, 2)).astype(np.float32)  # x and w by width, y and h by height
    columns = {
        "schema_version": np.full(count, SCHEMA_VERSION, dtype=np.int16),
        "origin": [source.origin] * count,
        "source_kind": [source.kind] * count,
        "source": [source.name] * count,
        "utc_time": np.array([round(frame.utc_time * 1e6) for frame, _ in rows], dtype=np.int64),  # µs
        "frame": [frame.frame for frame, _ in rows],
        "time_s": [frame.time_s for frame, _ in rows],
        "face_id": [face.id for _, face in rows],
        **{name: boxes[:, index] for index, name in enumerate(("x", "y", "w", "h"))},
        "emotion": [face.emotion for _, face in rows],
        "confidence": probabilities.max(axis=1, initial=0.0),
        **{emotion: probabilities[:, index] for index, emotion in enumerate(EMOTIONS)},
        **{name: relative[:, index] for index, name in enumerate(("x_rel", "y_rel", "w_rel", "h_rel"))},
        "frame_width": sizes[:, 0],
        "frame_height": sizes[:, 1],
        "engagement": probabilities @ get_preset(source.preset).vector,
        "preset": [source.preset] * count,
        "model_sha256": [source.model_sha256] * count,
    }
    return pa.table(
        [pa.array(columns[field.name], type=field.type) for field in EVENT_SCHEMA], schema=EVENT_SCHEMA
    )


def with_date(events: pa.Table) -> pa.Table:
    """The events with BATCH_SCHEMA's `date` column: the UTC day of each event."""
    days = pc.strftime(events.column("utc_time"), format="%Y-%m-%d")
    return events.append_column(BATCH_SCHEMA.field("date"), days)
