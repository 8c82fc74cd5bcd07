"""The Webcam tab on the visitor's own device: a Streamlit component that runs the engine's steps
in the browser with LiteRT.js, and feeds the results it sends to the same SessionStats and
LiveRecorder as the WebRTC path.

The component (ui/components/device_webcam: its JavaScript source, package.json and lockfile,
and the esbuild bundle built from them, committed) is served by the app from one folder,
gathered once per server: the bundle, LiteRT.js's WebAssembly, the emotion model's runtime at
batch 1 and BlazeFace at the input shapes the browser asks for (emotion.tflite_shapes; LiteRT.js
runs a model at the shapes written in its file), each file named by its SHA-256, which the
browser checks. No frame leaves the browser: only small messages of results (emotion.device_frames),
a few times a second.

It is a components-v1 component (`declare_component` with a path): Streamlit 1.67's v2
components serve files only from an installed package's manifest, and the app runs from its
checkout with `streamlit run app.py`. It sits in a fragment, so that each message reruns only
the fragment, not the page.
"""

from __future__ import annotations

import atexit
import datetime as dt
import hashlib
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import streamlit as st
import streamlit.components.v1 as components
from streamlit.logger import get_logger

from emotion import EmotionClassifier
from emotion.device_frames import InvalidDeviceMessage, parse_frames, record_frames
from emotion.events import EventSource
from emotion.faces import blazeface
from emotion.history import DetectionLog
from emotion.live import LiveRecorder, LiveSettings
from emotion.model_file import read_runtime, shipped_file
from emotion.session import SessionStats
from emotion.tflite_shapes import ModelShapeError, with_input_shape
from ui.context import SessionValue

logger = get_logger(__name__)

COMPONENT_NAME = "device_webcam"
BATCH_MS = 500  # the browser sends its frames' results twice a second
INPUT_STEP = blazeface.INPUT_STEP
# BlazeFace's input shapes the browser may ask for: sides multiples of INPUT_STEP from the model's
# own 128 to well over the finders' longest picture side (640), and at most this many per server.
MIN_INPUT_SIDE = blazeface.SHORT_RANGE.input_size
MAX_INPUT_SIDE = 1024
MAX_BLAZEFACE_SHAPES = 16
UPRIGHT_SHAPE = (MIN_INPUT_SIDE, MIN_INPUT_SIDE)  # the second look at each face
BLAZEFACE_FILE = "face_detection_short_range.tflite"
# What the browser's status says; "playing" and "paused" are a running session.
RUNNING = ("playing", "paused", "slow")
PROBLEMS = {
    "unavailable": "The model cannot run on this device",
    "checksum": "A model file arrived damaged",
    "camera-error": "The camera could not be used",
    "error": "The analysis stopped",
}


def bundle_folder() -> Path:
    """The committed bundle: index.html, device_webcam.js and LiteRT.js's WebAssembly."""
    return Path(str(resources.files("ui").joinpath("components", "device_webcam", "bundle")))


class DeviceAssets:
    """The folder the component is served from, and the model files in it; shared by every
    visitor, so BlazeFace's shapes are made under a lock."""

    def __init__(self, runtime: bytes, folder: Path):
        self.folder = folder
        for source in bundle_folder().iterdir():
            shutil.copyfile(source, folder / source.name)
        self._lock = threading.Lock()
        self._emotion = self._write("emotion", with_input_shape(runtime, (1, 48, 48, 1)).content)
        self._blazeface: dict[str, dict[str, str]] = {}
        self.blazeface(*UPRIGHT_SHAPE)
        self.component = components.declare_component(COMPONENT_NAME, path=str(folder))

    def _write(self, stem: str, content: bytes) -> dict[str, str]:
        sha256 = hashlib.sha256(content).hexdigest()
        name = f"{stem}-{sha256[:16]}.tflite"  # a new file gets a new name: no stale cached copy
        (self.folder / name).write_bytes(content)
        return {"url": f"./{name}", "sha256": sha256}

    def blazeface(self, height: int, width: int) -> bool:
        """Make BlazeFace's file for this input shape if it is one the browser's pipeline can
        need; False when it is not (or too many shapes are made already)."""
        key = f"{height}x{width}"
        with self._lock:
            if key in self._blazeface:
                return True
            sides = (height, width)
            sides_fit = all(MIN_INPUT_SIDE <= side <= MAX_INPUT_SIDE for side in sides)
            sides_fit = sides_fit and all(side % INPUT_STEP == 0 for side in sides)
            if not sides_fit or len(self._blazeface) >= MAX_BLAZEFACE_SHAPES:
                logger.warning("The on-device webcam asked for BlazeFace at %s, which is not made", key)
                return False
            model = shipped_file(BLAZEFACE_FILE).read_bytes()
            shaped = with_input_shape(model, (1, height, width, 3))
            self._blazeface[key] = self._write(f"blazeface-{key}", shaped.content)
            return True

    def files(self) -> dict[str, Any]:
        with self._lock:
            return {"runtime": "./", "emotion": self._emotion, "blazeface": dict(self._blazeface)}


@st.cache_resource(show_spinner="Preparing the on-device webcam...")
def device_assets(model_sha256: str, _classifier: EmotionClassifier) -> DeviceAssets | None:
    """The served folder for this model (by its SHA-256); None when the model file carries no
    runtime the browser could run (the server mode still works)."""
    runtime = read_runtime(_classifier.source, _classifier.metadata)
    if runtime is None:
        logger.warning("%s carries no LiteRT runtime: the webcam runs on the server only", _classifier.source)
        return None
    try:
        folder = Path(tempfile.mkdtemp(prefix="emotion-lens-device-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)  # the server's own copy, gone with it
        return DeviceAssets(runtime, folder)
    except (ModelShapeError, OSError) as error:
        logger.warning("The on-device webcam cannot be prepared: %s", error)
        return None


def browser_settings(settings: LiveSettings) -> dict[str, Any]:
    """The live settings as the browser's modules name them."""
    detector = settings.detector
    return {
        "detector": {
            "minSizeFraction": detector.min_size_fraction,
            "minFacePixels": detector.min_face_pixels,
            "maxDetectionSide": detector.max_detection_side,
            "minScore": detector.min_score,
        },
        "detectEvery": settings.detect_every,
        "classifyEvery": settings.classify_every,
        "smoothing": settings.smoothing,
        "boxSmoothing": settings.box_smoothing,
        "iouThreshold": settings.iou_threshold,
        "maxMissedFrames": settings.max_missed_frames,
        "maxFaces": settings.max_faces,
        "showFps": settings.show_fps,
    }


@dataclass
class DeviceSession:
    """One visitor's on-device webcam: the statistics of its current (or last) session, the
    detection log's hand-off, the last batch taken in, and what the browser said last."""

    stats: SessionStats
    settings: LiveSettings
    recorder: LiveRecorder = field(default_factory=LiveRecorder)
    session_id: str | None = None
    last_batch: int = 0
    status: str = "loading"
    problem: str | None = None
    sessions: int = 0  # STARTs so far
    stage_ms: dict[str, float] = field(default_factory=dict)  # summed per stage, this session
    stage_frames: int = 0

    @property
    def playing(self) -> bool:
        return self.session_id is not None and self.status in RUNNING

    def stage_means(self) -> dict[str, float]:
        """The browser's mean time a frame per stage this session, in milliseconds."""
        if not self.stage_frames:
            return {}
        return {stage: total / self.stage_frames for stage, total in self.stage_ms.items()}


def take(
    state: DeviceSession, value: Any, assets: DeviceAssets, source: Callable[[str], EventSource]
) -> bool:
    """One message from the browser into the session; True when it ends a session (STOP, or
    the analysis stopped). `source(name)` is the detection events' source for a new session."""
    if not isinstance(value, dict):
        return False
    batch, session_id, status = value.get("batch"), value.get("session"), value.get("status")
    if not isinstance(batch, int) or (session_id, batch) == (state.session_id, state.last_batch):
        return False  # the same message again (each rerun returns the component's last value)
    need = value.get("need")
    if isinstance(need, list) and len(need) == 2 and all(isinstance(side, int) for side in need):
        assets.blazeface(*need)
    if isinstance(session_id, str) and session_id != state.session_id and status in RUNNING:
        state.session_id = session_id[:32]
        state.stats.reset()
        state.stage_ms, state.stage_frames = {}, 0
        state.sessions += 1
        name = f"webcam {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} {secrets.token_hex(3)}"
        state.recorder.restart(source(name))
    state.last_batch = batch
    if session_id is not None and session_id == state.session_id:
        try:
            frames = parse_frames(value.get("frames", []))
        except InvalidDeviceMessage as error:
            logger.warning("A message from the on-device webcam was refused: %s", error)
            frames = []
        record_frames(frames, state.stats, state.recorder)
        for frame in frames:
            for stage, ms in frame.stages_ms.items():
                state.stage_ms[stage] = state.stage_ms.get(stage, 0.0) + ms
        state.stage_frames += len(frames)
    was_playing = state.playing
    state.status = status if isinstance(status, str) else state.status
    error = value.get("error")
    state.problem = error[:500] if isinstance(error, str) and error else None
    return was_playing and not state.playing


# The visitor's on-device webcam, made with the sidebar's live settings when first asked for.
DEVICE_SESSION: SessionValue[DeviceSession | None] = SessionValue("device_webcam", lambda: None)


def device_session(settings: LiveSettings) -> DeviceSession:
    """The visitor's DeviceSession; a new one (statistics started again) when the settings
    that shape the statistics change."""
    state = DEVICE_SESSION.get()
    stats_settings = (settings.engagement_preset, settings.log_max_rows, settings.log_interval_s)
    if (
        state is None
        or (
            state.settings.engagement_preset,
            state.settings.log_max_rows,
            state.settings.log_interval_s,
        )
        != stats_settings
    ):
        state = DeviceSession(SessionStats(*stats_settings), settings)
        DEVICE_SESSION.set(state)
    state.settings = settings
    return state


def show(
    classifier: EmotionClassifier,
    settings: LiveSettings,
    detection_log: DetectionLog | None,
    source: Callable[[str], EventSource],
    draw: Callable[[DeviceSession], None],
) -> DeviceSession | None:
    """The component, always (so that a session goes on while another tab is open), in a
    fragment that takes in the browser's messages and then calls `draw` with the session: each
    message reruns that fragment alone, whatever it shows (a session's statistics, its summary,
    a problem), never the page. The visitor's DeviceSession, or None where the model cannot be
    served to a browser."""
    assets = device_assets(classifier.sha256, classifier)
    if assets is None:
        return None
    state = device_session(settings)
    state.recorder.log = detection_log  # None: switched off, from the next frame on
    if state.recorder.source is not None:
        state.recorder.source = state.recorder.source._replace(preset=settings.engagement_preset)
    st.fragment(_component)(assets, state, detection_log, source, draw)
    return state


def _component(
    assets: DeviceAssets,
    state: DeviceSession,
    detection_log: DetectionLog | None,
    source: Callable[[str], EventSource],
    draw: Callable[[DeviceSession], None],
) -> None:
    value = assets.component(
        key="device-webcam",
        files=assets.files(),
        settings=browser_settings(state.settings),
        constraints={"width": 640, "height": 480, "frameRate": {"ideal": 30}},
        batchMs=BATCH_MS,
        default=None,
    )
    if take(state, value, assets, source) and detection_log is not None:
        detection_log.flush()  # STOP: the session is in the History tab at once
    draw(state)
