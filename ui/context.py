"""What every tab shares: the sidebar's settings, the model and the detection log (cached for
every visitor), the settings the webcam and the Video tab analyse with, and `SessionValue`, through
which each module keeps its own values per visitor."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Generic, TypeVar

import cv2
import streamlit as st
from streamlit.logger import get_logger

from emotion import resolve_model
from emotion.engagement import DEFAULT_PRESET, PRESETS
from emotion.faces import DEFAULT_FINDER, FINDERS, LIVE_DETECTOR, PHOTO_DETECTOR, SENSITIVITIES
from emotion.history import DetectionLog
from emotion.live import LiveSettings
from emotion.remote import LoadedModel
from emotion.request import AnalysisRequest
from emotion.settings import history_settings

T = TypeVar("T")
logger = get_logger(__name__)  # Streamlit's: its handler writes to the server's stderr


class SessionValue(Generic[T]):
    """A value kept per visitor under one st.session_state key.

    The module that owns the value declares it once, as a module constant with its type and how
    it starts; every read and write goes through it, so no two modules share (or misspell) a key.
    """

    def __init__(self, key: str, initial: Callable[[], T]):
        self.key = key
        self._initial = initial

    def get(self) -> T:
        """The visitor's value; `initial()` the first time it is asked for."""
        if self.key not in st.session_state:
            st.session_state[self.key] = self._initial()
        return st.session_state[self.key]

    def set(self, value: T) -> None:
        st.session_state[self.key] = value


HISTORY_UNLOCKED = SessionValue("history_unlocked", bool)  # the visitor gave HISTORY_PASSWORD


@dataclasses.dataclass(frozen=True)
class PageSettings(AnalysisRequest):
    """What the sidebar chose: the request every tab analyses with, and how the page shows it."""

    show_probabilities: bool = True
    detection_log: DetectionLog | None = None  # None unless the visitor switched the log on


@st.cache_resource(show_spinner="Loading the emotion model...")
def load_model() -> LoadedModel:
    """The classifier (shared by every visitor and the webcam threads) and any settings warning;
    which model it is goes to the server's log, as the command line prints it.

    Once per server, too: OpenCV works on one thread per caller. The server analyses many
    visitors' frames and photos at once; OpenCV's own worker threads would only contend with
    them for the cores and spin between jobs (the README's webcam rounds give the cost).
    """
    cv2.setNumThreads(1)
    loaded = resolve_model(st.secrets)
    logger.info("Model: %s", loaded.description)
    return loaded


def sidebar() -> PageSettings:
    with st.sidebar:
        st.header("Settings")
        finders = list(FINDERS)
        finder = st.selectbox(
            "Face finder",
            options=finders,
            index=finders.index(DEFAULT_FINDER),
            format_func=lambda name: FINDERS[name].summary,
            help=" ".join(FINDERS[name].help for name in finders),
        )
        sensitivity = st.select_slider(
            "Detector sensitivity",
            options=list(SENSITIVITIES),
            value="balanced",
            format_func=str.capitalize,
            help="Sensitive finds more faces (small, turned, dim) and more false ones; "
            "Strict finds fewer, surer faces.",
        )
        min_face_percent = st.slider(
            "Minimum face size (% of the picture's shorter side)",
            min_value=2,
            max_value=50,
            value=max(2, round(PHOTO_DETECTOR.min_size_fraction * 100)),
            help="Faces smaller than this are ignored. The webcam and videos look for faces of "
            f"at least {LIVE_DETECTOR.min_size_fraction:.0%}, which keeps the live view fast.",
        )
        show_probabilities = st.toggle("Show probabilities", value=True)
        st.subheader("Live and video")
        preset = st.selectbox(
            "Engagement preset",
            options=list(PRESETS),
            index=list(PRESETS).index(DEFAULT_PRESET),
            format_func=lambda name: PRESETS[name].label,
            help="How much each emotion counts towards engagement.",
        )
        st.caption(PRESETS[preset].description)
        smoothing = st.slider(
            "Smoothing",
            min_value=0.0,
            max_value=0.95,
            value=LiveSettings().smoothing,
            step=0.05,
            help="How much a face's emotion keeps from previous frames: higher is steadier, "
            "lower reacts faster.",
        )
        st.subheader("History")
        config = history_settings(st.secrets)
        locked = config.password is not None and not HISTORY_UNLOCKED.get()  # writing needs it as reading
        keep_log = st.toggle("Keep a detection log", value=False, key="history_log", disabled=locked)
        if locked:
            st.caption("The history is protected: enter its password in the History tab to keep a log.")
        st.caption(
            "When on, every face the webcam, a video or a photo shows is kept on this server as a "
            "detection event: the time, the face's box in the picture, the emotions read, the file "
            "name of an upload; no pictures. Every visitor of this app sees the same history in the "
            "History tab, and can delete it. Off stops the keeping from the next frame."
        )
        detection_log = open_detection_log(str(config.path)) if keep_log and not locked else None
        show_log_warning(detection_log)
    return PageSettings.of(
        finder,
        sensitivity,
        min_face_percent / 100,
        engagement_preset=preset,
        smoothing=smoothing,
        show_probabilities=show_probabilities,
        detection_log=detection_log,
    )


@st.cache_resource(show_spinner=False)
def open_detection_log(path: str) -> DetectionLog:
    """The detection log at HISTORY_PATH, shared by every visitor and the webcam threads."""
    return DetectionLog(path)


def show_log_warning(log: DetectionLog | None) -> None:
    """The trouble the detection log has had, if it is on and has any."""
    warning = None if log is None else log.status().warning
    if warning:
        st.warning(warning)


def max_upload_size_mb() -> int:
    """The largest upload, per file: server.maxUploadSize, which the server enforces."""
    return int(st.get_option("server.maxUploadSize"))


def live_settings(settings: PageSettings) -> LiveSettings:
    """How the webcam and the Video tab analyse, as the sidebar chose."""
    return settings.live_settings()
