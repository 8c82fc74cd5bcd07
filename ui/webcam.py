"""The Webcam tab, in one of two modes: on this device (ui.device_webcam: the browser finds,
reads, tracks and draws the faces, and sends the page only its results) or on the server
(streamlit-webrtc's streamer, whose frames the engine analyses in the streamer's thread); and the
session's statistics, redrawn every LIVE_REFRESH_S while the camera plays, the same in both."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import replace

import av
import pandas as pd
import streamlit as st
from streamlit.logger import get_logger
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from emotion import EmotionClassifier
from emotion.events import EventSource
from emotion.history import DetectionLog
from emotion.live import LiveAnalyzer, LiveRecorder
from emotion.session import SessionStats
from emotion.settings import get_setting
from ui import device_webcam
from ui.charts import distribution_chart, engagement_chart
from ui.context import PageSettings, SessionValue, show_log_warning
from ui.encoder import use_server_codecs
from ui.ice import ice_server_cache
from ui.widgets import Download, download_row, percent, suggestion_block

logger = get_logger(__name__)

LIVE_REFRESH_S = 1.0  # how often the live statistics refresh while the camera plays
# Each face's emotion is read on every 2nd frame (15 times a second from a 30 fps camera), its
# box followed on every frame: the classifier's share of a visitor's server CPU halved.
WEBCAM_CLASSIFY_EVERY = 2
# The analyzer with the sidebar's settings, the detection log's hand-off, whether the camera
# played at the last run (to tell a START and a STOP) and how many STARTs there have been.
LIVE_ANALYZER: SessionValue[LiveAnalyzer | None] = SessionValue("live_analyzer", lambda: None)
LIVE_RECORDER = SessionValue("live_recorder", LiveRecorder)
WEBCAM_PLAYING = SessionValue("webcam_playing", bool)
WEBCAM_SESSION = SessionValue("webcam_session", int)
# The two ways to run the tab. On this device is the default: no frame leaves the visitor's
# device, no server CPU per frame and no TURN relay; WEBCAM_MODE=server (a secret or the
# environment) makes the server the default, for visitors whose devices are too slow.
WEBCAM_MODES = {"device": "On this device", "server": "On the server"}
DEFAULT_WEBCAM_MODE = "device"
# The mode radio's value, under its widget key: "device" or "server".
WEBCAM_MODE: SessionValue[str] = SessionValue("webcam_mode", lambda: default_webcam_mode())
MODE_HELP = (
    "On this device: your browser finds and reads the faces with the app's own model files; no "
    "frame leaves it, and no server time or TURN relay is needed. On the server: frames travel "
    "to the server over WebRTC and back annotated; for a very slow device or a browser without "
    "WebAssembly."
)
CAMERA_CONSTRAINTS = {
    "video": {"width": 640, "height": 480, "frameRate": {"ideal": 30}},
    "audio": False,
}


def frame_callback(
    analyzer: LiveAnalyzer, recorder: LiveRecorder
) -> Callable[[av.VideoFrame], av.VideoFrame]:
    """The function streamlit-webrtc calls, in its own thread, for every camera frame."""

    def video_frame_callback(frame: av.VideoFrame) -> av.VideoFrame:
        shown, faces = analyzer.process_frame(frame)  # in the frame's own format: no conversions
        recorder.record(faces, frame.width, frame.height)  # queued for the detection log, if on
        return shown

    return video_frame_callback


def default_webcam_mode() -> str:
    """WEBCAM_MODE, or DEFAULT_WEBCAM_MODE (with a warning in the server's log if it names no mode)."""
    mode = get_setting("WEBCAM_MODE", st.secrets, DEFAULT_WEBCAM_MODE)
    if mode not in WEBCAM_MODES:
        logger.warning(
            "WEBCAM_MODE=%r is not one of %s: the webcam defaults to %r",
            mode,
            list(WEBCAM_MODES),
            DEFAULT_WEBCAM_MODE,
        )
        return DEFAULT_WEBCAM_MODE
    return mode


def use_server_mode() -> None:
    WEBCAM_MODE.set("server")


def show(classifier: EmotionClassifier, settings: PageSettings, visible: bool) -> None:
    """The mode's camera, always, so that a stream plays on while another tab is open; and
    while this tab is open, the session's statistics."""
    mode = st.radio(
        "Analyse the webcam",
        options=list(WEBCAM_MODES),
        index=list(WEBCAM_MODES).index(default_webcam_mode()),
        format_func=WEBCAM_MODES.get,
        horizontal=True,
        key=WEBCAM_MODE.key,
        help=MODE_HELP,
    )
    if mode == "device":
        show_on_device(
            classifier, settings, visible, lambda name: settings.source("webcam", name, classifier.sha256)
        )
        return
    wanted = replace(settings.live_settings(), classify_every=WEBCAM_CLASSIFY_EVERY)
    analyzer = LIVE_ANALYZER.get()
    if analyzer is None or analyzer.settings != wanted:
        # New settings take effect at once; the session's statistics start again with them.
        analyzer = LiveAnalyzer(classifier, wanted)
        LIVE_ANALYZER.set(analyzer)
    recorder = LIVE_RECORDER.get()
    recorder.log = settings.detection_log  # None: switched off, from the next frame on
    if recorder.source is not None:
        recorder.source = recorder.source._replace(preset=settings.engagement_preset)
    st.caption(
        "Press START and allow the camera. Frames are analysed on the server as they arrive "
        "and are not stored."
    )
    use_server_codecs()  # for the stream this starts: frames encoded once, faster, at capped bitrates
    context = webrtc_streamer(
        key="webcam",
        mode=WebRtcMode.SENDRECV,
        video_frame_callback=frame_callback(analyzer, recorder),
        media_stream_constraints=CAMERA_CONSTRAINTS,
        rtc_configuration={"iceServers": ice_server_cache().get()},
        async_processing=True,
    )
    playing = context.state.playing
    if playing and not WEBCAM_PLAYING.get():
        analyzer.reset()  # a new START is a new session
        WEBCAM_SESSION.set(WEBCAM_SESSION.get() + 1)
        name = f"webcam {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} {secrets.token_hex(3)}"
        recorder.restart(settings.source("webcam", name, classifier.sha256))
    elif not playing and WEBCAM_PLAYING.get() and settings.detection_log is not None:
        settings.detection_log.flush()  # STOP: the session is in the History tab at once
    WEBCAM_PLAYING.set(playing)
    if context.state.signalling and not playing:
        st.info(
            "Connecting to the camera... If this takes more than a few seconds, the network may "
            "block WebRTC: see the README on setting up a TURN server."
        )
    if not visible:
        return
    session = WEBCAM_SESSION.get()
    st.fragment(live_panel, run_every=LIVE_REFRESH_S if playing else None)(
        analyzer.stats, playing, session, settings.detection_log
    )


def show_on_device(
    classifier: EmotionClassifier, settings: PageSettings, visible: bool, source: Callable[[str], EventSource]
) -> None:
    """The on-device camera, and with it (redrawn as its results arrive) any problem it has and,
    while this tab is open, its session's statistics; where the model cannot be served to a
    browser, the server mode offered."""
    wanted = replace(settings.live_settings(), classify_every=WEBCAM_CLASSIFY_EVERY)

    def draw(state: device_webcam.DeviceSession) -> None:
        device_problem(state)
        if visible:
            live_panel(state.stats, state.playing, state.sessions, settings.detection_log)
            stages = state.stage_means()
            if stages and not state.playing:
                steps = ", ".join(f"{stage} {ms:.1f}" for stage, ms in stages.items() if stage != "total")
                st.caption(f"This device's time a frame, in ms: {steps}.")

    if device_webcam.show(classifier, wanted, settings.detection_log, source, draw) is None:
        st.warning("This model carries no runtime a browser can run: the webcam runs on the server.")
        st.button("Use the server mode", on_click=use_server_mode, key="webcam-use-server")


def device_problem(state: device_webcam.DeviceSession) -> None:
    """What keeps the on-device webcam from running, or running well; and where the device
    cannot run the model (or runs it too slowly), the server mode offered."""
    if not state.problem:
        return
    problem = device_webcam.PROBLEMS.get(state.status)
    if problem is None:
        st.info(state.problem)  # a slow device: it goes on, dropping frames
    else:
        st.error(f"{problem}: {state.problem}")
    offered = state.status in ("unavailable", "checksum", "slow")
    # In the fragment: the mode, outside it, changes with a run of the whole page.
    if offered and st.button("Use the server mode", on_click=use_server_mode, key="webcam-use-server"):
        st.rerun(scope="app")


def live_panel(stats: SessionStats, playing: bool, session: int, log: DetectionLog | None) -> None:
    """The session's statistics, redrawn every second while the camera plays, and any trouble
    the detection log has meanwhile."""
    show_log_warning(log)
    snapshot = stats.snapshot()
    if not playing and snapshot.frames == 0:
        st.caption(
            "If the browser shows a camera error, allow the camera for this site (the icon in the "
            "address bar) and press START again."
        )
        return
    with st.container(key="live-stats"):
        st.subheader("Live" if playing else "Session summary")
        if snapshot.frames and not snapshot.face_frames:
            st.info("No face in view yet: face the camera in good light.")
        columns = st.columns(4)
        if playing:
            columns[0].metric("Emotion now", snapshot.faces[0].emotion if snapshot.faces else "-")
        else:
            columns[0].metric("Duration", f"{snapshot.elapsed_s:.0f} s")
        columns[1].metric("Frames analysed", f"{snapshot.frames:,}")
        columns[2].metric("FPS", f"{snapshot.fps:.1f}")
        columns[3].metric("Latency", f"{snapshot.latency_ms:.0f} ms")
        columns = st.columns(4)
        columns[0].metric("Engagement 30 s", percent(snapshot.rolling_engagement.get(30)))
        columns[1].metric("Engagement 1 min", percent(snapshot.rolling_engagement.get(60)))
        columns[2].metric("Engagement session", percent(snapshot.mean_engagement))
        columns[3].metric("Most shown", snapshot.dominant_emotion or "-")
        if snapshot.face_frames:
            st.markdown("Emotions this session")
            distribution_chart(snapshot.distribution)
        if snapshot.timeline:
            st.markdown("Engagement, last minute")
            timeline = pd.DataFrame(snapshot.timeline, columns=["time_s", "engagement", "emotion"])
            engagement_chart(timeline)
        if snapshot.dominant_emotion:
            suggestion_block(
                f"webcam-{session}",
                snapshot.dominant_emotion,
                f"For this session's most shown emotion ({snapshot.dominant_emotion}):",
            )
    if not playing:
        st.caption(f"{snapshot.face_frames:,} face observations; the log keeps {snapshot.log_rows:,} rows.")
        download_row(
            Download("Session log CSV", stats.to_csv(), "webcam-session.csv", "text/csv", "webcam-csv")
        )
