"""Emotion Lens: facial emotion recognition for photos, a live webcam and video files.

The one Streamlit page: the sidebar, one function per tab (`photo_tab`, `webcam_tab`,
`video_tab`, `history_tab`), their charts, and what the page keeps per visitor (analysed
photos, the webcam session, the last video, the suggestions shown). With the sidebar's
detection log on, the photo, webcam and video paths hand their faces to the detection log
(`emotion.history`), which the History tab reads. The `emotion` package finds, classifies,
tracks and draws the faces and writes the downloads; suggestions come from `recommendations`.
`streamlit run app.py` runs `main()`; importing the module runs nothing, so that its helpers
can be tested on their own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import altair as alt
import av
import numpy as np
import pandas as pd
import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from emotion import EMOTIONS, EmotionClassifier, load_configured_classifier
from emotion.draw import emotion_color
from emotion.engagement import DEFAULT_PRESET, PRESETS
from emotion.events import EventSource, FrameFaces
from emotion.faces import LIVE_DETECTOR, PHOTO_DETECTOR, SENSITIVITIES, DetectorSettings, detector_settings
from emotion.history import (
    POSITION_BINS,
    DetectionLog,
    HistoryError,
    LiveRecorder,
    ParquetHistory,
    Selection,
    csv_bytes,
    export_table,
    history_settings,
    overview,
    parquet_bytes,
    password_matches,
    summarise,
)
from emotion.image import InvalidImage
from emotion.live import LiveAnalyzer, LiveSettings
from emotion.pipeline import PHOTO_BATCH_MAX, PHOTO_SLOTS, PhotoResult, annotated_png, process_photo
from emotion.remote import LoadedModel
from emotion.results import Face, numbered, photo_csv, photo_record
from emotion.settings import IceServerCache, ice_servers
from emotion.video import MAX_ANALYSED_FPS, MAX_DURATION_S, InvalidVideo, VideoResult, process_video
from recommendations import EmotionSuggestions, Recommendation, Recommender, load_suggestions

logger = logging.getLogger(__name__)

MODEL_CARD = Path(__file__).resolve().parent / "model" / "MODEL_CARD.md"
PHOTO_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
MANY_FACES = 8  # above this many faces in one photo, say that small faces are less reliable
PHOTO_RESULTS_KEPT = 2 * PHOTO_BATCH_MAX  # remembered per visitor: a rerun recomputes none of a batch
VIDEO_TYPES = ["mp4", "mov", "avi", "webm", "mkv", "m4v"]
PROGRESS_INTERVAL_S = 0.25  # between progress-bar updates: one per frame would flood the browser
CHART_POINTS = 2000  # at most this many points per chart; longer series are thinned
LIVE_REFRESH_S = 1.0  # how often the live statistics refresh while the camera plays
HISTORY_SLIDER_STEPS = 500  # the History tab's time slider moves in steps of its range / this, at least 1 s
# The charts use the overlay's colour for each emotion.
EMOTION_SCALE = alt.Scale(
    domain=list(EMOTIONS), range=["#{:02x}{:02x}{:02x}".format(*emotion_color(e)) for e in EMOTIONS]
)
CAMERA_CONSTRAINTS = {
    "video": {"width": 640, "height": 480, "frameRate": {"ideal": 30}},
    "audio": False,
}


@dataclasses.dataclass(frozen=True)
class PageSettings:
    """What the sidebar chose."""

    detector: DetectorSettings  # for photos
    live_detector: DetectorSettings  # for the webcam and videos
    show_probabilities: bool
    engagement_preset: str
    smoothing: float
    detection_log: DetectionLog | None  # None unless the visitor switched the log on


@st.cache_resource(show_spinner="Loading the emotion model...")
def load_model() -> LoadedModel:
    """The classifier (shared by every visitor and the webcam threads) and any settings warning."""
    return load_configured_classifier(st.secrets)


def sidebar() -> PageSettings:
    with st.sidebar:
        st.header("Settings")
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
        keep_log = st.toggle("Keep a detection log", value=False, key="history_log")
        st.caption(
            "When on, every face the webcam, a video or a photo shows is kept on this server as a "
            "detection event: the time, the face's box in the picture, the emotions read, the file "
            "name of an upload; no pictures. Every visitor of this app sees the same history in the "
            "History tab, and can delete it. Off stops the keeping from the next frame."
        )
        detection_log = open_detection_log(str(history_settings(st.secrets).path)) if keep_log else None
        if detection_log is not None and detection_log.status().warning:
            st.warning(detection_log.status().warning)
    min_size_fraction = min_face_percent / 100
    return PageSettings(
        detector=detector_settings("photo", sensitivity, min_size_fraction),
        live_detector=detector_settings("live", sensitivity, min_size_fraction),
        show_probabilities=show_probabilities,
        engagement_preset=preset,
        smoothing=smoothing,
        detection_log=detection_log,
    )


@st.cache_resource(show_spinner=False)
def open_detection_log(path: str) -> DetectionLog:
    """The detection log at HISTORY_PATH, shared by every visitor and the webcam threads."""
    return DetectionLog(path)


def event_source(kind: str, name: str, classifier: EmotionClassifier, settings: PageSettings) -> EventSource:
    return EventSource(kind, name, "app", settings.engagement_preset, classifier.sha256)


# --- Photo -------------------------------------------------------------------------------


def upload_limit_mb() -> int:
    """The largest upload, per file: server.maxUploadSize, which the server enforces."""
    return int(st.get_option("server.maxUploadSize"))


def photo_tab(classifier: EmotionClassifier, settings: PageSettings) -> None:
    # An upload's rerun can start while the run before it still analyses the same photo: the
    # lock makes the second wait for the first's result instead of analysing (and logging) it again.
    st.session_state.setdefault("photo_results", OrderedDict())
    st.session_state.setdefault("photo_lock", threading.Lock())
    uploads = st.file_uploader(
        "Upload photos",
        type=PHOTO_TYPES,
        accept_multiple_files=True,
        key="photos",
        help=f"JPEG, PNG, WebP and other common formats; up to {PHOTO_BATCH_MAX} at once, "
        f"{upload_limit_mb()} MB each.",
    )
    photos = list(uploads or [])
    if len(photos) > PHOTO_BATCH_MAX:
        st.warning(
            f"{len(photos)} photos uploaded: the first {PHOTO_BATCH_MAX} are analysed. Remove some "
            "to see the others."
        )
        photos = photos[:PHOTO_BATCH_MAX]
    if st.toggle("Take a photo with the camera", key="use_camera"):
        snapshot = st.camera_input("Snapshot", key="snapshot")
        if snapshot is not None:
            photos.append(snapshot)
    if not photos:
        st.info("Upload a photo with a face, or take one with the camera.")
        return
    for index, photo in enumerate(photos):
        with st.container(border=True, key=f"photo-{index}"):
            show_photo(photo.name, photo.file_id, photo.getvalue(), classifier, settings)


def analyse_photo(
    name: str, data: bytes, classifier: EmotionClassifier, settings: PageSettings
) -> PhotoResult:
    """The faces in a photo and its annotated preview; raises InvalidImage.

    Remembered per visitor by the photo's content, so the same photo uploaded again is not
    analysed again either. With the detection log on, a photo's faces are logged when it is
    analysed.
    """
    results: OrderedDict = st.session_state["photo_results"]
    key = (hashlib.sha256(data).hexdigest(), settings.detector)
    with st.session_state["photo_lock"]:
        if key not in results:
            with photo_slots():
                result = results[key] = process_photo(data, classifier, settings.detector)
            while len(results) > PHOTO_RESULTS_KEPT:
                results.popitem(last=False)
            if settings.detection_log is not None and result.faces:
                frame = FrameFaces(None, None, time.time(), *result.size, numbered(result.faces))
                settings.detection_log.submit(event_source("photo", name, classifier, settings), [frame])
                settings.detection_log.flush()  # so that the History tab, drawn next, shows it
    results.move_to_end(key)
    return results[key]


@st.cache_resource(show_spinner=False)
def photo_slots() -> threading.BoundedSemaphore:
    """Shared by every visitor: at most PHOTO_SLOTS photos are decoded and analysed at once."""
    return threading.BoundedSemaphore(PHOTO_SLOTS)


def show_photo(
    name: str, file_id: str, data: bytes, classifier: EmotionClassifier, settings: PageSettings
) -> None:
    st.text(name)  # a file name is shown as it is, never read as Markdown
    try:
        faces, preview, _ = analyse_photo(name, data, classifier, settings)
    except InvalidImage as error:
        st.error(str(error))
        return
    # Side by side on a wide screen; Streamlit stacks the columns on a phone.
    picture, details = st.columns([3, 2], gap="medium")
    picture.image(preview, width="stretch", alt=f"{name} with the faces found marked")
    with details:
        if not faces:
            st.info(
                "No face found. Try a well-lit photo with a face looking at the camera, a smaller "
                "minimum face size, or a more sensitive detector (sidebar)."
            )
            return
        if len(faces) > MANY_FACES:
            st.warning(
                f"{len(faces)} faces found. Small faces in a crowd are read less reliably; "
                f"the details cover the {MANY_FACES} largest."
            )
        for number, face in enumerate(faces[:MANY_FACES], start=1):
            show_face(number, face, settings.show_probabilities)
    suggestion_block(file_id, faces[0].emotion, f"For the largest face ({faces[0].emotion}):")
    show_downloads(name, file_id, data, faces)


def show_face(number: int, face: Face, show_probabilities: bool) -> None:
    label = "largest face" if number == 1 else f"face {number}"
    if face.uncertain:
        st.markdown(
            f"{label.capitalize()}: **uncertain**, {face.emotion} ({face.confidence:.0%}) or "
            f"{face.runner_up} ({face.runner_up_probability:.0%})"
        )
    else:
        st.markdown(f"{label.capitalize()}: **{face.emotion}** ({face.confidence:.0%})")
    if show_probabilities:
        share_chart(face.probabilities, "probability")


def show_downloads(name: str, file_id: str, data: bytes, faces: list[Face]) -> None:
    stem = Path(name).stem or "photo"
    buttons = st.container(horizontal=True)
    buttons.download_button(
        "Annotated PNG",
        lambda: annotated_png(data, faces),  # full size: made only when it is downloaded
        file_name=f"{stem}-emotions.png",
        mime="image/png",
        key=f"png-{file_id}",
        on_click="ignore",
    )
    buttons.download_button(
        "Results JSON",
        json.dumps(photo_record(name, faces), indent=2),
        file_name=f"{stem}-emotions.json",
        mime="application/json",
        key=f"json-{file_id}",
        on_click="ignore",
    )
    buttons.download_button(
        "Results CSV",
        photo_csv(faces),
        file_name=f"{stem}-emotions.csv",
        mime="text/csv",
        key=f"csv-{file_id}",
        on_click="ignore",
    )


def about_the_model(classifier: EmotionClassifier) -> None:
    metadata = getattr(classifier, "metadata", {}) or {}
    metrics = metadata.get("metrics") or {}
    with st.expander("About the model"):
        st.markdown(
            "A small convolutional network reads each face (48x48 grayscale, found with OpenCV's "
            "Haar cascade) as one of seven expressions: " + ", ".join(EMOTIONS) + ". It learnt "
            "from FER2013's faces, each read by ten people (Microsoft's FER+ votes)."
        )
        st.markdown(
            "**What the numbers mean.** The probabilities are calibrated to how many people would "
            "read the face that way: *happy 70 %* means about 7 people in 10 would call it happy. "
            "Where no emotion leads the next by 10 points, the face is shown as uncertain "
            "(*happy or neutral?*) instead of with one label."
        )
        runtime = metrics.get("runtime") if isinstance(metrics.get("runtime"), dict) else {}
        scored = runtime or metrics  # the app's own runtime, where the file has its figures
        figures = {
            "Agreement with most people": scored.get("val_accuracy"),
            "Mean recall per emotion": scored.get("val_mean_recall"),
            "Distance from the vote shares": scored.get("ece_votes"),
            "Validation faces": scored.get("val_labelled_images"),
            "Training faces": metrics.get("train_images"),
            "Parameters": metrics.get("parameters"),
        }
        shown = {
            label: value
            for label, value in figures.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        if shown:
            columns = st.columns(min(3, len(shown)))
            for index, (label, value) in enumerate(shown.items()):
                text = f"{value:.1%}" if isinstance(value, float) else f"{value:,}"
                columns[index % len(columns)].metric(label, text)
        else:
            st.caption("This model file carries no evaluation figures.")
        per_class = scored.get("per_class")
        if isinstance(per_class, dict) and per_class:
            table = pd.DataFrame(per_class).T.reindex([e for e in EMOTIONS if e in per_class])
            st.markdown(
                "Per emotion, on the validation faces, against what most of their ten readers "
                "said (the model card has the details):"
            )
            st.dataframe(
                table,
                width="stretch",
                column_config={
                    "precision": st.column_config.NumberColumn(format="percent"),
                    "recall": st.column_config.NumberColumn(format="percent"),
                },
            )
        st.markdown(
            "**Limitations.** FER2013 is mostly posed or staged web photos; the model reads facial "
            "*expressions*, not feelings, and is less accurate for faces, lighting and cultures "
            "that are rare in its training data. The detector misses faces in profile, tilted, "
            "small or partly hidden. Do not use it to make decisions about people."
        )
        st.caption(f"Model file: {Path(getattr(classifier, 'source', '')).name}")
        if MODEL_CARD.is_file() and st.toggle("Show the model card (model/MODEL_CARD.md)", key="model_card"):
            st.markdown(MODEL_CARD.read_text(encoding="utf-8"))


# --- Shared by the webcam and video tabs --------------------------------------------------


def live_settings(settings: PageSettings) -> LiveSettings:
    return LiveSettings(
        detector=settings.live_detector,
        smoothing=settings.smoothing,
        engagement_preset=settings.engagement_preset,
    )


def distribution_chart(distribution: Mapping[str, float]) -> None:
    shares = [float(distribution.get(emotion, 0.0)) for emotion in EMOTIONS]
    share_chart(shares, "share")


def share_chart(values, title: str) -> None:
    """One horizontal bar per emotion, in EMOTIONS order, on a 0-100 % axis."""
    table = pd.DataFrame({"emotion": EMOTIONS, title: np.asarray(values, dtype=float)})
    st.vega_lite_chart(table, share_spec(title), width="stretch")


def engagement_chart(table: pd.DataFrame) -> None:
    """Engagement (0-100 %) over time_s seconds."""
    st.vega_lite_chart(table, engagement_spec(points=len(table) < 120), width="stretch")


# The charts' Vega-Lite specifications are made once, without data: st.altair_chart would check
# and convert an Altair chart on every run, most of the time a live panel's refresh takes.


def vega_lite(chart: alt.Chart) -> dict:
    """The chart's Vega-Lite specification without its data, which each drawing brings."""
    spec = chart.to_dict()
    spec.pop("data", None)
    spec.pop("datasets", None)
    return spec


@functools.cache
def share_spec(title: str) -> dict:
    return vega_lite(
        alt.Chart()
        .mark_bar()
        .encode(
            x=alt.X(f"{title}:Q", title=None, scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            y=alt.Y("emotion:N", sort=list(EMOTIONS), title=None, axis=alt.Axis(labelOverlap=False)),
            color=alt.Color("emotion:N", scale=EMOTION_SCALE, legend=None),
            tooltip=["emotion:N", alt.Tooltip(f"{title}:Q", format=".1%")],
        )
        .properties(height=24 * len(EMOTIONS))
    )


@functools.cache
def engagement_spec(points: bool) -> dict:
    return vega_lite(
        alt.Chart()
        .mark_line(point=points)
        .encode(
            x=alt.X("time_s:Q", title="seconds"),
            y=alt.Y("engagement:Q", title=None, scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            tooltip=[alt.Tooltip("time_s:Q", title="seconds"), alt.Tooltip("engagement:Q", format=".0%")],
        )
        .properties(height=180)
    )


@functools.cache
def timeline_spec() -> dict:
    return vega_lite(
        alt.Chart()
        .mark_tick(thickness=3)
        .encode(
            x=alt.X("time_s:Q", title="seconds"),
            y=alt.Y("emotion:N", sort=list(EMOTIONS), title=None, scale=alt.Scale(domain=list(EMOTIONS))),
            color=alt.Color("face:N", title=None, legend=alt.Legend(orient="bottom")),
            tooltip=["time_s:Q", "face:N", "emotion:N"],
        )
        .properties(height=220)
    )


def current_suggestion(key: str, emotion: str, another: bool = False) -> Recommendation:
    """The suggestion shown under `key`; a new one when the emotion changed or `another` is asked."""
    shown: dict = st.session_state.setdefault("suggestions", {})
    if another or key not in shown or shown[key].emotion != emotion:
        # One chooser per visitor, so "Another suggestion" never repeats the one just shown.
        recommender = st.session_state.setdefault("recommender", Recommender(load_suggestion_file()))
        shown[key] = recommender.recommend(emotion)
    return shown[key]


def suggestion_block(key: str, emotion: str, heading: str) -> None:
    suggestion = current_suggestion(key, emotion)
    with st.container(key=f"suggestions-{key}"):
        st.markdown(f"**{heading}**")
        st.markdown(f"Quote: *{suggestion.quote.text}* ({suggestion.quote.author})")
        st.markdown(f"Activity: {suggestion.activity}")
        st.markdown(f"Music: [{suggestion.music.title}]({suggestion.music.url}), {suggestion.music.artist}")
        st.button(
            "Another suggestion",
            key=f"another-{key}",
            on_click=current_suggestion,
            args=(key, emotion, True),
        )


@st.cache_resource(show_spinner=False)
def load_suggestion_file() -> dict[str, EmotionSuggestions]:
    return load_suggestions()


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


# --- Webcam ------------------------------------------------------------------------------


def frame_callback(
    analyzer: LiveAnalyzer, recorder: LiveRecorder
) -> Callable[[av.VideoFrame], av.VideoFrame]:
    """The function streamlit-webrtc calls, in its own thread, for every camera frame."""

    def video_frame_callback(frame: av.VideoFrame) -> av.VideoFrame:
        annotated, faces = analyzer.process(frame.to_ndarray(format="bgr24"))
        recorder.record(faces, frame.width, frame.height)  # queued for the detection log, if on
        return av.VideoFrame.from_ndarray(annotated, format="bgr24")

    return video_frame_callback


def webcam_tab(classifier: EmotionClassifier, settings: PageSettings) -> None:
    wanted = live_settings(settings)
    analyzer = st.session_state.get("live_analyzer")
    if analyzer is None or analyzer.settings != wanted:
        # New settings take effect at once; the session's statistics start again with them.
        analyzer = LiveAnalyzer(classifier, wanted)
        st.session_state["live_analyzer"] = analyzer
    recorder: LiveRecorder = st.session_state.setdefault("live_recorder", LiveRecorder())
    recorder.log = settings.detection_log  # None: switched off, from the next frame on
    if recorder.source is not None:
        recorder.source = recorder.source._replace(preset=settings.engagement_preset)
    st.caption(
        "Press START and allow the camera. Frames are analysed on the server as they arrive "
        "and are not stored."
    )
    context = webrtc_streamer(
        key="webcam",
        mode=WebRtcMode.SENDRECV,
        video_frame_callback=frame_callback(analyzer, recorder),
        media_stream_constraints=CAMERA_CONSTRAINTS,
        rtc_configuration={"iceServers": ice_server_cache().get()},
        async_processing=True,
    )
    playing = context.state.playing
    if playing and not st.session_state.get("webcam_playing"):
        analyzer.reset()  # a new START is a new session
        st.session_state["webcam_session"] = st.session_state.get("webcam_session", 0) + 1
        name = f"webcam {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} {secrets.token_hex(3)}"
        recorder.restart(event_source("webcam", name, classifier, settings))
    elif not playing and st.session_state.get("webcam_playing") and settings.detection_log is not None:
        settings.detection_log.flush()  # STOP: the session is in the History tab at once
    st.session_state["webcam_playing"] = playing
    if context.state.signalling and not playing:
        st.info(
            "Connecting to the camera... If this takes more than a few seconds, the network may "
            "block WebRTC: see the README on setting up a TURN server."
        )
    session = st.session_state.get("webcam_session", 0)
    st.fragment(live_panel, run_every=LIVE_REFRESH_S if playing else None)(
        analyzer, playing, session, settings.detection_log
    )


def live_panel(analyzer: LiveAnalyzer, playing: bool, session: int, log: DetectionLog | None) -> None:
    """The session's statistics, redrawn every second while the camera plays, and any trouble
    the detection log has meanwhile."""
    if log is not None and log.status().warning:
        st.warning(log.status().warning)
    snapshot = analyzer.snapshot()
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
        st.download_button(
            "Session log CSV",
            analyzer.log_csv(),
            file_name="webcam-session.csv",
            mime="text/csv",
            key="webcam-csv",
            on_click="ignore",
        )


@st.cache_resource(show_spinner=False)
def ice_server_cache() -> IceServerCache:
    """The webcam's ICE servers, shared by every visitor and refreshed in the background."""
    return IceServerCache(lambda: ice_servers(st.secrets))


# --- Video -------------------------------------------------------------------------------


class VideoAnalysis(NamedTuple):
    file_id: str
    settings: LiveSettings
    result: VideoResult | None
    error: str | None
    started: float  # when the analysis began, seconds since the epoch


def video_tab(classifier: EmotionClassifier, settings: PageSettings) -> None:
    upload = st.file_uploader(
        "Upload a video",
        type=VIDEO_TYPES,
        key="video",
        help=f"MP4, MOV, AVI or WebM, up to {MAX_DURATION_S:.0f} s and {upload_limit_mb()} MB.",
    )
    if upload is None:
        st.info(
            f"Upload a video of up to {MAX_DURATION_S:.0f} s and {upload_limit_mb()} MB: its frames "
            f"are annotated (up to {MAX_ANALYSED_FPS} a second) and you get the emotions over time. "
            "Processing takes less time than playing it."
        )
        return
    wanted = live_settings(settings)
    analysis: VideoAnalysis | None = st.session_state.get("video_analysis")
    analysed = None
    if analysis is None or analysis.file_id != upload.file_id:
        analysed = analysis = analyse_video(upload.file_id, upload.getvalue(), classifier, wanted)
    elif analysis.settings != wanted:
        st.info("The settings changed since this video was analysed.")
        if st.button("Analyse again", key="reanalyse-video"):
            analysed = analysis = analyse_video(upload.file_id, upload.getvalue(), classifier, wanted)
    if analysed is not None and analysed.result is not None and settings.detection_log is not None:
        source = event_source("video", upload.name, classifier, settings)
        settings.detection_log.submit(source, video_frames(analysed.result, analysed.started))
        settings.detection_log.flush()
    if analysis.error:
        st.error(analysis.error)
        return
    show_video_result(upload.file_id, Path(upload.name).stem or "video", analysis.result)


def analyse_video(
    file_id: str, data: bytes, classifier: EmotionClassifier, settings: LiveSettings
) -> VideoAnalysis:
    st.session_state.pop("video_analysis", None)  # free the previous video first
    started_utc = time.time()
    bar = st.progress(0.0, text="Analysing the video...")
    started = time.monotonic()
    last_update = [0.0]

    def on_progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last_update[0] < PROGRESS_INTERVAL_S and done < total:
            return
        last_update[0] = now
        left_s = (now - started) / done * (total - done)
        bar.progress(min(1.0, done / total), text=f"Frame {done:,} of {total:,}, about {left_s:.0f} s left")

    try:
        result, error = process_video(data, classifier, settings=settings, progress=on_progress), None
    except InvalidVideo as invalid:
        result, error = None, str(invalid)
    except Exception as failure:  # a missing encoder, no memory left: the server's fault, not the file's
        logger.exception("Analysing a video failed")
        result, error = (
            None,
            f"The video could not be analysed ({type(failure).__name__}). Please try again later.",
        )
    bar.empty()
    analysis = VideoAnalysis(file_id, settings, result, error, started_utc)
    st.session_state["video_analysis"] = analysis
    return analysis


def video_frames(result: VideoResult, started_utc: float) -> list[FrameFaces]:
    """The video's faces frame by frame, for the detection log; their time is the analysis's
    start plus the frame's."""
    frames: dict[int, FrameFaces] = {}
    for row in result.rows:
        if row.frame not in frames:
            utc_time = started_utc + row.time_s
            frames[row.frame] = FrameFaces(row.frame, row.time_s, utc_time, result.width, result.height, [])
        frames[row.frame].faces.append(row.face)
    return list(frames.values())


def show_video_result(file_id: str, stem: str, result: VideoResult) -> None:
    st.video(result.video, format="video/mp4")
    note = f"{result.frames:,} frames, {result.duration_s:.1f} s at {result.fps:.0f} fps"
    if result.sampled:
        note += f", sampled from {result.source_fps:.0f} fps"
    if result.downscaled:
        note += f", downscaled from {result.source_width}x{result.source_height}"
    st.caption(note)
    buttons = st.container(horizontal=True)
    buttons.download_button(
        "Annotated MP4",
        result.video,
        file_name=f"{stem}-emotions.mp4",
        mime="video/mp4",
        key=f"mp4-{file_id}",
        on_click="ignore",
    )
    buttons.download_button(
        "Results CSV",
        result.to_csv,  # made only when it is downloaded
        file_name=f"{stem}-emotions.csv",
        mime="text/csv",
        key=f"video-csv-{file_id}",
        on_click="ignore",
    )
    if not result.rows:
        st.info("No face found in the video.")
        return
    with st.container(key="video-results"):
        columns = st.columns(3)
        columns[0].metric("Most shown", result.dominant_emotion or "-")
        columns[1].metric("Frames with faces", f"{result.frames_with_faces:,}")
        columns[2].metric("Mean engagement", percent(result.mean_engagement))
        st.markdown("Emotion of each face over time")
        emotion_timeline(result.rows)
        st.markdown("Emotions in the video")
        distribution_chart(result.distribution)
        st.markdown("Engagement over time")
        engagement = pd.DataFrame(result.engagement, columns=["time_s", "engagement"])
        engagement_chart(thin(engagement))
        if result.dominant_emotion:
            suggestion_block(
                f"video-{file_id}",
                result.dominant_emotion,
                f"For the video's most shown emotion ({result.dominant_emotion}):",
            )


def thin(frame: pd.DataFrame, limit: int = CHART_POINTS) -> pd.DataFrame:
    """Every k-th row so that a chart gets at most `limit` points."""
    return frame.iloc[:: max(1, -(-len(frame) // limit))]


def emotion_timeline(rows) -> None:
    """Each face's emotion over time: one tick per (frame, face), thinned."""
    table = thin(
        pd.DataFrame(
            [(row.time_s, f"face {row.face.id}", row.face.emotion) for row in rows],
            columns=["time_s", "face", "emotion"],
        )
    )
    st.vega_lite_chart(table, timeline_spec(), width="stretch")


# --- History -----------------------------------------------------------------------------


def history_tab() -> None:
    config = history_settings(st.secrets)
    if config.password and not st.session_state.get("history_unlocked"):
        entered = st.text_input("Password for the history", type="password", key="history_password")
        if not entered:
            st.info("The history is protected: enter the password set by HISTORY_PASSWORD.")
            return
        if not password_matches(entered, config.password):
            st.error("That is not the password.")
            return
        st.session_state["history_unlocked"] = True
    store: DetectionLog | ParquetHistory = open_detection_log(str(config.path))
    if config.table is not None:
        shown = st.radio(
            "Show", ["Detection log", "Batch table"], horizontal=True, key="history_store", help=config.table
        )
        if shown == "Batch table":
            store = ParquetHistory(config.table)
    try:
        whole = store.read(overview)
    except HistoryError as error:
        st.warning(str(error))
        return
    if whole.events == 0:
        st.info(
            "No detections are kept yet. Switch on **Keep a detection log** in the sidebar, then use "
            "the webcam, a video or photos."
        )
        return
    selection = history_selection(whole)
    st.button("Refresh", key="history-refresh", help="Show what has been kept since, a live webcam's too.")
    summary = store.read(lambda connection: summarise(connection, selection))
    with st.container(key="history-results"):
        columns = st.columns(3)
        columns[0].metric("Detections", f"{summary.events:,}")
        columns[1].metric("Sources", f"{len(summary.per_source):,}")
        columns[2].metric("Mean engagement", percent(summary.mean_engagement))
        if not summary.events:
            st.info("No detections in this selection.")
        else:
            st.markdown("Emotions")
            distribution_chart(summary.distribution)
            st.markdown("Where faces appear in the frame")
            st.altair_chart(position_chart(summary.positions), width="stretch")
            st.markdown(f"Detections and engagement over time (UTC, per {summary.bucket_s} s)")
            st.altair_chart(history_timeline(summary.timeline), width="stretch")
            st.markdown("Per source")
            st.dataframe(
                summary.per_source,
                hide_index=True,
                width="stretch",
                column_config={"engagement": st.column_config.NumberColumn(format="percent")},
            )
            buttons = st.container(horizontal=True)
            for label, encode, file_name, mime in (
                ("Parquet", parquet_bytes, "detections.parquet", "application/vnd.apache.parquet"),
                ("CSV", csv_bytes, "detections.csv", "text/csv"),
            ):
                buttons.download_button(
                    f"Selection as {label}",
                    # Made when clicked, not on every run: a selection can be large.
                    functools.partial(export_selection, store, selection, encode),
                    file_name=file_name,
                    mime=mime,
                    key=f"history-{label.lower()}",
                    on_click="ignore",
                )
    if isinstance(store, DetectionLog):
        delete_history(store, whole.events)


def export_selection(store: DetectionLog | ParquetHistory, selection: Selection, encode) -> bytes:
    return encode(store.read(lambda connection: export_table(connection, selection)))


def history_selection(whole) -> Selection:
    """The sources and time range chosen in the tab's filters."""
    sources = st.multiselect("Sources", whole.sources, placeholder="All sources", key="history_sources")
    start = end = None  # open: every event
    first, last = whole.first.replace(tzinfo=None), whole.last.replace(tzinfo=None)  # naive UTC
    if first < last:
        step_s = max(1, int((last - first).total_seconds() // HISTORY_SLIDER_STEPS))
        chosen = st.slider(
            "Time (UTC)",
            min_value=first,
            max_value=last,
            value=(first, last),
            step=dt.timedelta(seconds=step_s),
            format="YYYY-MM-DD HH:mm:ss",
            key="history_time",
        )
        # An end left where it was stays open, so that events logged since are shown too.
        start = None if chosen[0] <= first else chosen[0].replace(tzinfo=dt.UTC)
        end = None if chosen[1] >= last else chosen[1].replace(tzinfo=dt.UTC)
    return Selection(tuple(sources), start, end)


def delete_history(log: DetectionLog, events: int) -> None:
    if not st.session_state.get("history_confirm_delete"):
        st.button(
            "Delete the history...",
            key="history-delete",
            on_click=lambda: st.session_state.update(history_confirm_delete=True),
        )
        return
    st.warning(
        f"Delete all {events:,} detections kept on this server, for every visitor? This cannot be undone."
    )
    buttons = st.container(horizontal=True)
    if buttons.button("Delete everything", type="primary", key="history-delete-confirm"):
        st.session_state["history_confirm_delete"] = False
        try:
            log.delete_all()
        except HistoryError as error:
            st.error(str(error))
            return
        st.rerun()
    if buttons.button("Cancel", key="history-delete-cancel"):
        st.session_state["history_confirm_delete"] = False
        st.rerun()


def position_chart(positions: pd.DataFrame) -> alt.Chart:
    """A heat map of the face centres: the frame cut into POSITION_BINS x POSITION_BINS cells."""
    cells = list(range(POSITION_BINS))
    return (
        alt.Chart(positions)
        .mark_rect()
        .encode(
            x=alt.X("column:O", scale=alt.Scale(domain=cells), axis=None),
            y=alt.Y("row:O", scale=alt.Scale(domain=cells), axis=None),
            color=alt.Color(
                "events:Q",
                title="detections",
                scale=alt.Scale(scheme="oranges"),
                legend=alt.Legend(format="~s"),
            ),
            tooltip=[alt.Tooltip("events:Q", title="detections")],
        )
        .properties(height=240)
    )


def history_timeline(timeline: pd.DataFrame) -> alt.VConcatChart:
    base = alt.Chart(timeline).encode(x=alt.X("time:T", title=None))
    detections = base.mark_bar().encode(y=alt.Y("detections:Q", title="detections")).properties(height=120)
    engagement = (
        base.mark_line(point=len(timeline) < 60)
        .encode(
            y=alt.Y(
                "engagement:Q", title="engagement", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")
            )
        )
        .properties(height=120)
    )
    return alt.vconcat(detections, engagement)


# --- Page --------------------------------------------------------------------------------


def main() -> None:
    st.set_page_config(page_title="Emotion Lens", page_icon=":performing_arts:", layout="centered")
    st.title("Emotion Lens")
    st.markdown(
        "Finds the faces in a photo, a webcam stream or a video and reads each one's expression "
        "as one of seven emotions."
    )
    settings = sidebar()
    loaded = load_model()
    if loaded.warning:
        st.warning(loaded.warning)
    photo, webcam, video, history = st.tabs(["Photo", "Webcam", "Video", "History"])
    with photo:
        photo_tab(loaded.classifier, settings)
        about_the_model(loaded.classifier)
    with webcam:
        webcam_tab(loaded.classifier, settings)
    with video:
        video_tab(loaded.classifier, settings)
    with history:
        history_tab()


if __name__ == "__main__":  # as `streamlit run app.py` runs it; importing app.py runs nothing
    main()
