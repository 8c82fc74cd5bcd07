"""The Video tab: an uploaded video analysed with a progress bar, then shown annotated with its
emotions over time and downloads."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import streamlit as st

from emotion import EmotionClassifier
from emotion.events import VideoFaces
from emotion.history import log_result
from emotion.live import LiveSettings
from emotion.media import VIDEO_EXTENSIONS
from emotion.progress import ProgressPacer
from emotion.video import MAX_ANALYSED_FPS, MAX_DURATION_S, InvalidVideo, VideoResult, process_video
from ui.charts import distribution_chart, emotion_timeline, engagement_chart, thin
from ui.context import PageSettings, SessionValue, max_upload_size_mb
from ui.widgets import Download, download_row, percent, suggestion_block

logger = logging.getLogger(__name__)

VIDEO_SLOTS = 2  # videos analysed at once for all visitors together (each keeps a core busy); the others wait


class VideoAnalysis(NamedTuple):
    file_id: str
    settings: LiveSettings
    result: VideoResult | None
    error: str | None
    started: float  # when the analysis began, seconds since the epoch


# The last video analysed, kept so that a rerun shows it without analysing it again.
VIDEO_ANALYSIS: SessionValue[VideoAnalysis | None] = SessionValue("video_analysis", lambda: None)


def show(classifier: EmotionClassifier, settings: PageSettings, visible: bool) -> None:
    """The uploader, and while the tab is open, the video's analysis and results."""
    upload = st.file_uploader(
        "Upload a video",
        type=VIDEO_EXTENSIONS,
        key="video",
        help=f"MP4, MOV, AVI or WebM, up to {MAX_DURATION_S:.0f} s and {max_upload_size_mb()} MB.",
    )
    if upload is None:
        st.info(
            f"Upload a video of up to {MAX_DURATION_S:.0f} s and {max_upload_size_mb()} MB: its frames "
            f"are annotated (up to {MAX_ANALYSED_FPS} a second) and you get the emotions over time. "
            "Processing takes less time than playing it."
        )
        return
    if not visible:
        return
    wanted = settings.live_settings()
    analysis = VIDEO_ANALYSIS.get()
    analysed = None
    if analysis is None or analysis.file_id != upload.file_id:
        analysed = analysis = analyse_video(upload.file_id, upload.getvalue(), classifier, wanted)
    elif analysis.settings != wanted:
        st.info("The settings changed since this video was analysed.")
        if st.button("Analyse again", key="reanalyse-video"):
            analysed = analysis = analyse_video(upload.file_id, upload.getvalue(), classifier, wanted)
    if analysed is not None and analysed.result is not None:
        result = analysed.result
        log_result(
            settings.detection_log,
            VideoFaces(result.rows, result.width, result.height),
            name=upload.name,
            request=settings,
            model_sha256=classifier.sha256,
            utc_time=analysed.started,
            flush=True,  # so that the History tab, opened next, shows it
        )
    if analysis.error:
        st.error(analysis.error)
        return
    show_video_result(upload.file_id, Path(upload.name).stem or "video", analysis.result)


def analyse_video(
    file_id: str, data: bytes, classifier: EmotionClassifier, settings: LiveSettings
) -> VideoAnalysis:
    VIDEO_ANALYSIS.set(None)  # free the previous video first
    started_utc = time.time()
    bar = st.progress(0.0, text="Analysing the video...")
    pace = ProgressPacer()

    def on_progress(done: int, total: int) -> None:
        progress = pace(done, total)
        if progress is not None:
            bar.progress(
                progress.fraction, text=f"Frame {done:,} of {total:,}, about {progress.left_s:.0f} s left"
            )

    slots = video_slots()
    if not slots.acquire(blocking=False):
        bar.progress(0.0, text="Waiting for other visitors' videos to be analysed...")
        slots.acquire()
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
    finally:
        slots.release()
    bar.empty()
    analysis = VideoAnalysis(file_id, settings, result, error, started_utc)
    VIDEO_ANALYSIS.set(analysis)
    return analysis


@st.cache_resource(show_spinner=False)
def video_slots() -> threading.BoundedSemaphore:
    """Shared by every visitor: at most VIDEO_SLOTS videos are decoded and analysed at once."""
    return threading.BoundedSemaphore(VIDEO_SLOTS)


def show_video_result(file_id: str, stem: str, result: VideoResult) -> None:
    st.video(result.video, format="video/mp4")
    note = f"{result.frames:,} frames, {result.duration_s:.1f} s at {result.fps:.0f} fps"
    if result.sampled:
        note += f", sampled from {result.source_fps:.0f} fps"
    if result.downscaled:
        note += f", downscaled from {result.source_width}x{result.source_height}"
    st.caption(note)
    download_row(
        Download("Annotated MP4", result.video, f"{stem}-emotions.mp4", "video/mp4", f"mp4-{file_id}"),
        Download("Results CSV", result.to_csv, f"{stem}-emotions.csv", "text/csv", f"video-csv-{file_id}"),
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
