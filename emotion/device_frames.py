"""Frames analysed on the visitor's own device: their messages, checked, as the engine's types.

The Webcam tab's on-device mode (ui/device_webcam.py) runs the engine's steps in the browser
and sends each analysed frame's results, batched a few times a second, as JSON: never pixels,
only what the server's `SessionStats` and `LiveRecorder` take from a WebRTC frame. One frame:

    {"t": 1.234,              seconds since START, on the device's clock
     "w": 640, "h": 480,      the frame's size in pixels
     "ms": 9.8,               how long the device took to analyse it
     "stages": {"detect": 6.1, "classify": 2.2, ...},   milliseconds per step
     "faces": [{"id": 1, "box": [x, y, w, h], "p": [7 probabilities in EMOTIONS order]}]}

`parse_frames` turns a batch into `DeviceFrame`s, refusing what a browser running this app's
code would never send (InvalidDeviceMessage), so that a crafted message cannot put anything but
numbers of the right shape into a session's statistics or the detection log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from emotion.labels import EMOTIONS
from emotion.live import LiveRecorder
from emotion.results import Face
from emotion.session import SessionStats

MAX_FRAMES_PER_BATCH = 120  # four seconds at 30 fps: a batch is sent a few times a second
MAX_FACES_PER_FRAME = 20  # the tracker keeps at most max_faces (5 by default)
MAX_FRAME_SIDE = 8192  # pixels
MAX_STAGES = 16
PROBABILITY_SUM_TOLERANCE = 0.01  # the device rounds each probability to 5 decimals


class InvalidDeviceMessage(ValueError):
    """A message from the on-device webcam that this app's page would not have sent."""


class DeviceFrame(NamedTuple):
    """One frame analysed on the device: its time in the session, its size, how long it took
    (in all and per stage) and the tracked faces in view, ordered by id."""

    time_s: float
    width: int
    height: int
    latency_s: float
    faces: tuple[Face, ...]
    stages_ms: Mapping[str, float]


def _number(value: Any, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidDeviceMessage(f"{what} is not a number")
    if not low <= value <= high:
        raise InvalidDeviceMessage(f"{what} ({value}) is outside {low}-{high}")
    return float(value)


def _integer(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidDeviceMessage(f"{what} is not a whole number")
    return int(_number(value, what, low, high))


def _face(message: Any, width: int, height: int) -> Face:
    if not isinstance(message, Mapping):
        raise InvalidDeviceMessage("a face is not an object")
    box = message.get("box")
    if not isinstance(box, Sequence) or len(box) != 4:
        raise InvalidDeviceMessage("a face's box is not [x, y, w, h]")
    x, y = _integer(box[0], "x", 0, width - 1), _integer(box[1], "y", 0, height - 1)
    w, h = _integer(box[2], "w", 1, width - x), _integer(box[3], "h", 1, height - y)
    probabilities = message.get("p")
    if not isinstance(probabilities, Sequence) or len(probabilities) != len(EMOTIONS):
        raise InvalidDeviceMessage(f"a face's probabilities are not {len(EMOTIONS)} numbers")
    values = np.array([_number(value, "a probability", 0.0, 1.0) for value in probabilities], np.float32)
    if abs(float(values.sum()) - 1.0) > PROBABILITY_SUM_TOLERANCE:
        raise InvalidDeviceMessage("a face's probabilities do not sum to 1")
    face_id = _integer(message.get("id"), "a face's id", 1, 2**31)
    return Face.from_probabilities((x, y, w, h), values / values.sum(), face_id)


def parse_frame(message: Any) -> DeviceFrame:
    """One frame's message (see the module's docstring) -> a DeviceFrame."""
    if not isinstance(message, Mapping):
        raise InvalidDeviceMessage("a frame is not an object")
    width = _integer(message.get("w"), "the frame's width", 1, MAX_FRAME_SIDE)
    height = _integer(message.get("h"), "the frame's height", 1, MAX_FRAME_SIDE)
    faces = message.get("faces", [])
    if not isinstance(faces, Sequence) or len(faces) > MAX_FACES_PER_FRAME:
        raise InvalidDeviceMessage(f"a frame's faces are not a list of at most {MAX_FACES_PER_FRAME}")
    stages = message.get("stages", {})
    if not isinstance(stages, Mapping) or len(stages) > MAX_STAGES:
        raise InvalidDeviceMessage("a frame's stages are not a small object")
    return DeviceFrame(
        time_s=_number(message.get("t"), "the frame's time", 0.0, 7 * 24 * 3600.0),
        width=width,
        height=height,
        latency_s=_number(message.get("ms"), "the frame's latency", 0.0, 60_000.0) / 1000.0,
        faces=tuple(sorted((_face(face, width, height) for face in faces), key=lambda face: face.id)),
        stages_ms={
            str(stage)[:32]: _number(ms, "a stage's time", 0.0, 60_000.0) for stage, ms in stages.items()
        },
    )


def parse_frames(messages: Any) -> list[DeviceFrame]:
    """A batch's frames -> DeviceFrames, in the order the device analysed them."""
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        raise InvalidDeviceMessage("the frames are not a list")
    if len(messages) > MAX_FRAMES_PER_BATCH:
        raise InvalidDeviceMessage(f"a batch holds more than {MAX_FRAMES_PER_BATCH} frames")
    return [parse_frame(message) for message in messages]


def record_frames(frames: Sequence[DeviceFrame], stats: SessionStats, recorder: LiveRecorder) -> None:
    """Each frame into the session's statistics and the detection log's hand-off, as the
    WebRTC path records its frames; the frame rate is measured on the device's clock."""
    for frame in frames:
        stats.record(frame.time_s, frame.faces, frame.latency_s, frame_clock_s=frame.time_s)
        recorder.record(frame.faces, frame.width, frame.height)
