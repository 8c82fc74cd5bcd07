"""The page's logic, run by Streamlit's AppTest (no browser): tabs, photo uploads, messages."""

from __future__ import annotations

import io
import time
from pathlib import Path
from types import SimpleNamespace

import av
import cv2
import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

import ui.charts
import ui.context
import ui.photo
import ui.video
import ui.webcam
import ui.widgets
from emotion import EMOTIONS, process_video
from emotion.settings import FREE_PASSWORD_ATTEMPTS
from tests.conftest import REPO, CallsAtOnce

APP = str(REPO / "app.py")
TIMEOUT_S = 120  # the first run loads the model (seconds); later runs reuse Streamlit's cache


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeStreamer:
    """Stands in for streamlit_webrtc.webrtc_streamer, which needs a real server's runtime.

    It hands the page's frame callback to the test, which plays the camera by calling it.
    """

    def __init__(self):
        self.playing = False
        self.callback = None
        self.calls = []

    def __call__(self, key, **options):
        self.calls.append((key, options))
        self.callback = options["video_frame_callback"]
        return SimpleNamespace(state=SimpleNamespace(playing=self.playing, signalling=False))


@pytest.fixture
def streamer(monkeypatch) -> FakeStreamer:
    fake = FakeStreamer()
    monkeypatch.setattr(ui.webcam, "webrtc_streamer", fake)
    return fake


@pytest.fixture
def app(streamer) -> AppTest:
    page = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    page.run()
    assert not page.exception, page.exception
    return page


@pytest.fixture(scope="module")
def astronaut_png(astronaut_rgb) -> bytes:
    return png_bytes(astronaut_rgb)


def texts(page: AppTest) -> str:
    return "\n".join(element.value for element in page.markdown)


def open_tab(page: AppTest, label: str) -> AppTest:
    """Switch tabs, as a click on a tab does: the page runs again with that tab open."""
    page.session_state["tab"] = label
    page.run()
    assert not page.exception, page.exception
    return page


def upload_photos(page: AppTest, *files: tuple[str, bytes, str]) -> AppTest:
    page.file_uploader(key="photos").set_value(list(files))
    page.run()
    assert not page.exception, page.exception
    return page


def test_page_renders_title_tabs_and_settings(app):
    assert app.title[0].value == "Emotion Lens"
    assert [tab.label for tab in app.tabs] == ["Photo", "Webcam", "Video", "History"]
    assert app.select_slider[0].label == "Detector sensitivity"
    assert app.info[0].value.startswith("Upload a photo")


def test_face_photo_shows_emotion_probabilities_and_suggestions(app, astronaut_png):
    upload_photos(app, ("astronaut.png", astronaut_png, "image/png"))
    assert not app.error
    assert len(app.image) >= 1  # the annotated photo
    page_text = texts(app)
    assert any(f"**{emotion}**" in page_text for emotion in EMOTIONS)
    for heading in ("Quote:", "Activity:", "Music:"):
        assert heading in page_text
    assert [button.label for button in app.get("download_button")] == [
        "Annotated PNG",
        "Results JSON",
        "Results CSV",
    ]


def test_another_suggestion_keeps_the_upload(app, astronaut_png):
    upload_photos(app, ("astronaut.png", astronaut_png, "image/png"))
    app.button(key=next(button.key for button in app.button if button.key.startswith("another-"))).click()
    app.run()
    assert not app.exception
    assert len(app.image) >= 1
    assert "Quote:" in texts(app)


def test_corrupt_upload_shows_message_and_next_upload_works(app, astronaut_png):
    upload_photos(app, ("broken.png", b"this is not an image", "image/png"))
    assert len(app.error) == 1
    assert app.error[0].value.startswith("This file is not an image")
    assert "broken.png" in [element.value for element in app.text]
    assert "Quote:" not in texts(app)

    upload_photos(app, ("astronaut.png", astronaut_png, "image/png"))
    assert not app.error
    assert "Quote:" in texts(app)


def test_photo_without_a_face_says_so(app):
    rng = np.random.default_rng(0)
    sky = np.clip(rng.normal(180, 10, (240, 320, 3)), 0, 255).astype(np.uint8)
    upload_photos(app, ("sky.png", png_bytes(sky), "image/png"))
    assert not app.error
    assert any(info.value.startswith("No face found") for info in app.info)


def test_about_the_model_states_its_limitations(app):
    expander = next(block for block in app.expander if block.label == "About the model")
    assert "Limitations" in "\n".join(element.value for element in expander.markdown)


def test_about_the_model_says_what_the_numbers_mean_with_the_runtimes_figures(app, classifier):
    expander = next(block for block in app.expander if block.label == "About the model")
    text = "\n".join(element.value for element in expander.markdown)
    assert "7 people in 10" in text and "uncertain" in text
    shown = {metric.label: metric.value for metric in expander.metric}
    runtime = classifier.metadata["metrics"]["runtime"]
    assert shown["Agreement with most people"] == f"{runtime['val_accuracy']:.1%}"
    assert shown["Mean recall per emotion"] == f"{runtime['val_mean_recall']:.1%}"
    assert shown["Posed faces read as meant"] == f"{runtime['posed']['accuracy']:.1%}"
    assert shown["Posed faces: mean recall"] == f"{runtime['posed']['mean_recall']:.1%}"
    assert "acting six emotions" in text


def clip_frames(clip: Path, count: int) -> list[av.VideoFrame]:
    with av.open(str(clip)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(av.VideoFrame.from_ndarray(frame.to_ndarray(format="bgr24"), format="bgr24"))
            if len(frames) == count:
                return frames
    return frames


def metric_values(page: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in page.metric}


def test_webcam_frames_feed_live_statistics_and_a_summary(app, streamer, face_clip):
    assert streamer.calls[-1][0] == "webcam"
    options = streamer.calls[-1][1]
    assert options["media_stream_constraints"]["audio"] is False
    assert options["rtc_configuration"]["iceServers"]

    open_tab(app, "Webcam")
    streamer.playing = True
    app.run()  # START: a new session
    frames = clip_frames(face_clip, 12)
    for frame in frames:
        annotated = streamer.callback(frame)
        assert (annotated.width, annotated.height) == (frame.width, frame.height)
    app.run()
    assert not app.exception, app.exception
    assert metric_values(app)["Frames analysed"] == str(len(frames))
    assert "Live" in [header.value for header in app.subheader]

    streamer.playing = False
    app.run()  # STOP
    assert not app.exception, app.exception
    assert "Session summary" in [header.value for header in app.subheader]
    assert "Session log CSV" in [button.label for button in app.get("download_button")]


def test_the_server_runs_opencv_on_one_thread_per_caller(app):
    assert cv2.getNumThreads() == 1


def test_video_upload_shows_annotated_video_and_timeline(app, classifier, face_clip):
    open_tab(app, "Video")
    app.file_uploader(key="video").set_value(("face_clip.avi", face_clip.read_bytes(), "video/x-msvideo"))
    app.run()
    assert not app.exception, app.exception
    assert not app.error
    assert len(app.get("video")) == 1
    labels = [button.label for button in app.get("download_button")]
    assert "Annotated MP4" in labels
    assert "Results CSV" in labels
    # With the sidebar as it starts, the tab finds the faces `python -m emotion video` finds.
    shown = app.session_state["video_analysis"].result
    assert shown.to_csv() == process_video(face_clip, classifier).to_csv()


def test_broken_video_says_so(app):
    open_tab(app, "Video")
    app.file_uploader(key="video").set_value(("broken.mp4", b"not a video at all", "video/mp4"))
    app.run()
    assert not app.exception, app.exception
    assert len(app.error) == 1
    assert "not a video file" in app.error[0].value


def test_many_faces_warn_and_list_the_largest(app, astronaut_rgb):
    crowd = np.tile(astronaut_rgb, (3, 3, 1))  # nine copies of one face
    upload_photos(app, ("crowd.png", png_bytes(crowd), "image/png"))
    assert any(warning.value.startswith("9 faces found") for warning in app.warning)
    assert sum(element.value.startswith(("Largest face:", "Face ")) for element in app.markdown) == 8


def test_camera_snapshot_is_analysed_like_an_upload(app, astronaut_rgb):
    app.toggle(key="use_camera").set_value(True).run()
    jpeg = io.BytesIO()
    Image.fromarray(astronaut_rgb).save(jpeg, format="JPEG")
    app.camera_input(key="snapshot").set_value(("image.jpg", jpeg.getvalue(), "image/jpeg"))
    app.run()
    assert not app.exception, app.exception
    assert "Quote:" in texts(app)


def test_model_warning_is_shown(monkeypatch, streamer, classifier):
    from emotion.remote import LoadedModel

    warning = "Could not load the model from MODEL_URL (test); using the bundled model."
    monkeypatch.setattr(
        ui.context, "resolve_model", lambda secrets: LoadedModel(classifier, "bundled", warning)
    )
    st.cache_resource.clear()  # the page loads its model once per process
    try:
        page = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
        page.run()
        assert not page.exception, page.exception
        assert warning in [element.value for element in page.warning]
    finally:
        st.cache_resource.clear()


def test_each_session_state_key_has_one_owner():
    """Only SessionValue touches st.session_state, and no two modules declare the same key."""
    import ast

    keys, touches = [], []
    for path in [REPO / "app.py", *sorted((REPO / "ui").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "session_state" and path.name != "context.py":
                touches.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "SessionValue":
                keys.append(node.args[0].value)
    assert touches == []
    assert len(keys) == len(set(keys)) > 0


def test_the_page_helpers_work_without_running_the_page():
    import pandas as pd

    from emotion.engagement import DEFAULT_PRESET
    from emotion.faces import detector_settings
    from emotion.live import LiveSettings

    # With the sidebar as it starts, the webcam and the Video tab get the engine's defaults.
    defaults = ui.context.PageSettings(
        detector=detector_settings("photo"),
        live_detector=detector_settings("live"),
        show_probabilities=True,
        engagement_preset=DEFAULT_PRESET,
        smoothing=LiveSettings().smoothing,
        detection_log=None,
    )
    assert ui.context.live_settings(defaults) == LiveSettings()
    assert len(ui.charts.thin(pd.DataFrame({"x": range(5000)}), limit=2000)) <= 2000
    assert ui.widgets.percent(None) == "-" and ui.widgets.percent(0.256) == "26%"


@pytest.fixture
def photo_analyses(monkeypatch) -> list[bytes]:
    """Records the photos the page analyses."""
    analysed, process_photo = [], ui.photo.process_photo

    def counting(data, *args, **kwargs):
        analysed.append(data)
        return process_photo(data, *args, **kwargs)

    monkeypatch.setattr(ui.photo, "process_photo", counting)
    return analysed


def grey_png(level: int, size=(32, 48)) -> bytes:
    return png_bytes(np.full((*size, 3), level, np.uint8))


def test_file_names_are_shown_as_they_are_not_as_markdown(app):
    name = "**bold** :red[red] [link](https://example.org).png"
    upload_photos(app, (name, grey_png(128), "image/png"))
    assert name in [element.value for element in app.text]
    rendered = "\n".join(element.value for element in (*app.markdown, *app.caption, *app.error, *app.info))
    assert "**bold**" not in rendered and "[link]" not in rendered


def test_a_batch_over_the_limit_is_cut_with_a_message_and_reruns_analyse_nothing(app, photo_analyses):
    from emotion.pipeline import PHOTO_BATCH_MAX

    photos = [(f"grey-{level}.png", grey_png(level), "image/png") for level in range(PHOTO_BATCH_MAX + 1)]
    upload_photos(app, *photos)
    assert any(
        warning.value.startswith(f"{len(photos)} photos uploaded: the first {PHOTO_BATCH_MAX}")
        for warning in app.warning
    )
    assert len(photo_analyses) == PHOTO_BATCH_MAX
    app.toggle[0].set_value(not app.toggle[0].value).run()  # another setting: every photo is rerun
    assert not app.exception, app.exception
    assert len(photo_analyses) == PHOTO_BATCH_MAX  # all remembered


def test_the_photo_uploader_says_that_files_past_the_batch_are_held_all_the_same(app):
    from emotion.pipeline import PHOTO_BATCH_MAX

    # Streamlit receives and keeps every file added before the page runs: it can only be told.
    assert f"add at most {PHOTO_BATCH_MAX}" in app.file_uploader(key="photos").help
    photos = [(f"grey-{level}.png", grey_png(level), "image/png") for level in range(PHOTO_BATCH_MAX + 1)]
    upload_photos(app, *photos)
    assert any("kept on the server until you remove them" in warning.value for warning in app.warning)


def test_photos_are_remembered_by_their_content(app, photo_analyses):
    same = grey_png(90)
    upload_photos(app, ("one.png", same, "image/png"), ("the same again.png", same, "image/png"))
    assert photo_analyses == [same]


def test_the_page_keeps_a_small_preview_of_a_large_photo(app, astronaut_rgb):
    import cv2

    from emotion.pipeline import PREVIEW_MAX_SIDE

    large = cv2.resize(astronaut_rgb, (3000, 3000), interpolation=cv2.INTER_CUBIC)
    upload_photos(app, ("large.png", png_bytes(large), "image/png"))
    (kept,) = app.session_state["photo_results"].values()
    assert Image.open(io.BytesIO(kept.preview)).size == (PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE)
    assert len(kept.preview) < 1_000_000
    assert "Annotated PNG" in [button.label for button in app.get("download_button")]


def test_the_upload_limit_the_page_states_is_the_one_the_server_enforces(app):
    import tomllib

    with open(REPO / ".streamlit" / "config.toml", "rb") as config:
        enforced_mb = tomllib.load(config)["server"]["maxUploadSize"]
    for key in ("photos", "video"):
        uploader = app.file_uploader(key=key)
        assert uploader.proto.max_upload_size_mb == enforced_mb
        assert f"{enforced_mb} MB" in uploader.help


def test_a_video_error_that_is_not_the_files_fault_is_a_message_and_not_repeated(app, monkeypatch):
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        raise MemoryError

    monkeypatch.setattr(ui.video, "process_video", failing)
    open_tab(app, "Video")
    app.file_uploader(key="video").set_value(("clip.mp4", b"any bytes", "video/mp4"))
    app.run()
    assert not app.exception, app.exception
    assert [error.value for error in app.error] == [
        "The video could not be analysed (MemoryError). Please try again later."
    ]
    app.toggle[0].set_value(not app.toggle[0].value).run()  # a setting videos do not use
    assert not app.exception, app.exception
    assert len(calls) == 1


def test_photos_of_all_visitors_are_analysed_at_most_photo_slots_at_a_time(streamer, monkeypatch):
    import threading

    from emotion import pipeline

    calls = CallsAtOnce(pipeline.process_photo, pipeline.PHOTO_SLOTS)
    monkeypatch.setattr(ui.photo, "process_photo", calls)
    visitors = [AppTest.from_file(APP, default_timeout=TIMEOUT_S) for _ in range(pipeline.PHOTO_SLOTS + 1)]
    for visitor in visitors:
        visitor.run()

    def upload(visitor: AppTest, level: int) -> None:
        upload_photos(visitor, (f"grey-{level}.png", grey_png(level), "image/png"))

    threads = [
        threading.Thread(target=upload, args=(visitor, 40 + level)) for level, visitor in enumerate(visitors)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls.most == pipeline.PHOTO_SLOTS
    assert all(not visitor.exception for visitor in visitors)


def test_the_annotated_png_download_is_drawn_in_a_photo_slot(app, astronaut_png, monkeypatch):
    import threading

    from emotion import pipeline

    rows = []
    monkeypatch.setattr(ui.photo, "download_row", lambda *downloads: rows.append(downloads))
    upload_photos(app, ("astronaut.png", astronaut_png, "image/png"))
    (annotated,) = [download for row in rows for download in row if download.label == "Annotated PNG"]
    drawn = threading.Event()
    slots = pipeline.photo_slot()
    for _ in range(pipeline.PHOTO_SLOTS):  # both taken, as by two photos being analysed
        slots.acquire()
    try:
        threading.Thread(target=lambda: annotated.data() and drawn.set(), daemon=True).start()
        assert not drawn.wait(1.0)  # Streamlit's download pool waits for a slot too
    finally:
        for _ in range(pipeline.PHOTO_SLOTS):
            slots.release()
    assert drawn.wait(30)


def test_videos_of_all_visitors_are_analysed_at_most_video_slots_at_a_time(streamer, monkeypatch):
    import threading

    from tests.test_video import make_video

    calls = CallsAtOnce(ui.video.process_video, ui.video.VIDEO_SLOTS)
    monkeypatch.setattr(ui.video, "process_video", calls)
    visitors = [
        open_tab(AppTest.from_file(APP, default_timeout=TIMEOUT_S).run(), "Video")
        for _ in range(ui.video.VIDEO_SLOTS + 1)
    ]

    def upload(visitor: AppTest, level: int) -> None:
        clip = make_video([np.full((48, 64, 3), level, np.uint8)] * 2)
        visitor.file_uploader(key="video").set_value((f"grey-{level}.mp4", clip, "video/mp4")).run()

    threads = [
        threading.Thread(target=upload, args=(visitor, 40 + level)) for level, visitor in enumerate(visitors)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls.most == ui.video.VIDEO_SLOTS
    assert all(not visitor.exception and not visitor.error for visitor in visitors)


def test_a_face_with_no_emotion_clearly_ahead_is_shown_as_uncertain():
    def page():
        from emotion import Face
        from ui.photo import show_face

        close = [0.05, 0.0, 0.05, 0.42, 0.05, 0.05, 0.38]
        show_face(1, Face.from_probabilities((0, 0, 10, 10), close), False)

    shown = AppTest.from_function(page).run()
    assert shown.markdown[0].value == "Largest face: **uncertain**, happy (42%) or neutral (38%)"


# --- History ---------------------------------------------------------------------------------


@pytest.fixture
def history_path(tmp_path, monkeypatch) -> Path:
    """A detection log of the test's own (the page keeps one log per HISTORY_PATH)."""
    path = tmp_path / "history" / "detections.duckdb"
    monkeypatch.setenv("HISTORY_PATH", str(path))
    for name in ("HISTORY_TABLE", "HISTORY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return path


def history_info(page: AppTest) -> list[str]:
    return [info.value for info in page.info if "detections" in info.value.lower()]


def per_source(page: AppTest) -> dict[str, int]:
    table = next(frame.value for frame in page.dataframe if "source" in frame.value.columns)
    return dict(zip(table["source"], table["detections"], strict=True))


def test_nothing_is_kept_until_the_log_is_switched_on(history_path, streamer, astronaut_png):
    page = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    assert page.toggle(key="history_log").value is False
    assert any(
        "every visitor" in caption.value.lower() for caption in page.sidebar.caption
    )  # the privacy text
    upload_photos(page, ("astronaut.png", astronaut_png, "image/png"))
    open_tab(page, "History")
    assert [info.startswith("No detections are kept yet.") for info in history_info(page)] == [True]
    assert not history_path.exists()


def test_photo_webcam_and_video_detections_are_kept_shown_and_deleted(
    history_path, streamer, astronaut_png, face_clip
):
    page = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    page.toggle(key="history_log").set_value(True).run()
    upload_photos(page, ("astronaut.png", astronaut_png, "image/png"))

    streamer.playing = True
    page.run()  # START
    recorder = page.session_state["live_recorder"]
    log = recorder.log
    assert log is not None
    frames = clip_frames(face_clip, 16)
    for frame in frames[:8]:
        streamer.callback(frame)
    kept = page.session_state["live_analyzer"].snapshot().face_frames
    assert kept > 0
    page.toggle(key="history_log").set_value(False).run()  # off: nothing more from the next frame
    assert recorder.log is None
    for frame in frames[8:]:
        streamer.callback(frame)
    streamer.playing = False
    page.run()  # STOP

    page.toggle(key="history_log").set_value(True).run()
    open_tab(page, "Video")
    page.file_uploader(key="video").set_value(("talk.avi", face_clip.read_bytes(), "video/x-msvideo")).run()
    assert log.flush()
    open_tab(page, "History")
    assert not page.exception, page.exception
    sources = per_source(page)
    webcam = next(name for name in sources if name.startswith("webcam "))
    assert sources == {"astronaut.png": 1, webcam: kept, "talk.avi": sources["talk.avi"]}
    assert sources["talk.avi"] > 0
    assert metric_values(page)["Detections"] == f"{1 + kept + sources['talk.avi']:,}"
    labels = [button.label for button in page.get("download_button")]
    assert {"Selection as Parquet", "Selection as CSV"} <= set(labels)

    page.multiselect(key="history_sources").set_value(["astronaut.png"]).run()
    assert metric_values(page)["Detections"] == "1"

    page.button(key="history-delete").click().run()
    assert any(warning.value.startswith("Delete all") for warning in page.warning)
    page.button(key="history-delete-cancel").click().run()
    assert metric_values(page)["Detections"] == "1"
    page.button(key="history-delete").click().run()
    page.button(key="history-delete-confirm").click().run()
    assert not page.exception, page.exception
    assert history_info(page)
    assert "Detections" not in metric_values(page)
    assert not history_path.exists()


def test_history_filters_survive_a_visit_to_another_tab(history_path, streamer):
    import datetime as dt

    from emotion.history import DetectionLog
    from tests.test_history import START, VIDEO, WEBCAM, frames

    log = DetectionLog(history_path, interval_s=60.0)
    log.submit(WEBCAM, frames(30))  # 3 s from START
    log.submit(VIDEO, frames(20, start=START + 600))
    assert log.flush()
    log.close()
    page = open_tab(AppTest.from_file(APP, default_timeout=TIMEOUT_S).run(), "History")
    first = dt.datetime.fromtimestamp(START, dt.UTC).replace(tzinfo=None)
    chosen = (first + dt.timedelta(seconds=1), page.slider(key="history_time").value[1])
    page.multiselect(key="history_sources").set_value(["webcam A"]).run()
    page.slider(key="history_time").set_value(chosen).run()
    assert metric_values(page)["Detections"] == "20"  # the webcam's last 2 s

    open_tab(open_tab(page, "Photo"), "History")
    assert not page.exception, page.exception
    assert page.multiselect(key="history_sources").value == ["webcam A"]
    assert page.slider(key="history_time").value == chosen
    assert metric_values(page)["Detections"] == "20"


def test_history_password_guards_the_tab(history_path, streamer, monkeypatch):
    monkeypatch.setenv("HISTORY_PASSWORD", "s3cret words")
    page = open_tab(AppTest.from_file(APP, default_timeout=TIMEOUT_S).run(), "History")
    assert any("protected" in info.value for info in page.info)
    assert not history_info(page)
    page.text_input(key="history_password").set_value("guess").run()
    assert [error.value for error in page.error] == ["That is not the password."]
    page.text_input(key="history_password").set_value("s3cret words").run()
    assert not page.error
    assert history_info(page)
    shown = [*page.markdown, *page.caption, *page.info, *page.sidebar.caption]
    assert not any("s3cret" in element.value for element in shown)


def test_password_guesses_are_throttled_and_writing_needs_the_password_too(
    history_path, streamer, monkeypatch
):
    monkeypatch.setenv("HISTORY_PASSWORD", "s3cret words")
    page = open_tab(AppTest.from_file(APP, default_timeout=TIMEOUT_S).run(), "History")
    assert page.toggle(key="history_log").disabled  # no log written by who may not read it
    assert any("enter its password in the History tab" in caption.value for caption in page.sidebar.caption)
    for guess in range(FREE_PASSWORD_ATTEMPTS):
        page.text_input(key="history_password").set_value(f"guess {guess}").run()
        assert [error.value for error in page.error] == ["That is not the password."]
    page.run()  # a rerun with the same wrong password is no new attempt
    assert [error.value for error in page.error] == ["That is not the password."]
    page.text_input(key="history_password").set_value("s3cret words").run()
    assert [error.value for error in page.error] == ["Too many wrong passwords: try again in 1 s."]
    assert not history_info(page)  # even the right password waits its turn
    time.sleep(1.1)  # the wait it was told
    page.run()
    assert not page.error and history_info(page)
    assert not page.toggle(key="history_log").disabled


def test_password_guesses_are_counted_by_address_so_a_new_session_gets_no_fresh_tries(
    history_path, streamer, monkeypatch
):
    monkeypatch.setenv("HISTORY_PASSWORD", "s3cret words")
    for guess in range(FREE_PASSWORD_ATTEMPTS):  # each from a fresh session, as a reload makes one
        page = open_tab(AppTest.from_file(APP, default_timeout=TIMEOUT_S).run(), "History")
        page.text_input(key="history_password").set_value(f"guess {guess}").run()
        assert [error.value for error in page.error] == ["That is not the password."]
    page = open_tab(AppTest.from_file(APP, default_timeout=TIMEOUT_S).run(), "History")
    page.text_input(key="history_password").set_value("guess again").run()
    assert [error.value for error in page.error] == ["Too many wrong passwords: try again in 1 s."]
    time.sleep(1.1)
    page.text_input(key="history_password").set_value("s3cret words").run()
    assert not page.error and history_info(page)


def test_history_can_show_a_batch_table(history_path, streamer, monkeypatch, tmp_path):
    import pyarrow.dataset

    from emotion.events import EventSource, events_table, with_date
    from tests.test_history import frames

    source = EventSource("video", "/archive/lecture.mp4", "batch", "classroom", "ab" * 32)
    pyarrow.dataset.write_dataset(
        with_date(events_table(source, frames(25))),
        tmp_path / "batch" / "events",
        format="parquet",
        partitioning=["source_kind", "date"],
        partitioning_flavor="hive",
    )
    monkeypatch.setenv("HISTORY_TABLE", str(tmp_path / "batch"))
    page = open_tab(AppTest.from_file(APP, default_timeout=TIMEOUT_S).run(), "History")
    assert history_info(page)  # the log is shown first, and is empty
    assert str(tmp_path) not in page.radio(key="history_store").help  # no server path for visitors
    page.radio(key="history_store").set_value("Batch table").run()
    assert not page.exception, page.exception
    assert metric_values(page)["Detections"] == "25"
    assert per_source(page) == {"/archive/lecture.mp4": 25}
    assert not [button for button in page.button if button.key == "history-delete"]  # read-only


def test_the_per_source_tables_cells_are_neutralised_for_its_toolbars_csv(
    history_path, streamer, monkeypatch, tmp_path
):
    import pyarrow.dataset

    from emotion.events import EventSource, events_table, with_date
    from tests.test_history import frames

    formula = '=HYPERLINK("https://example.com","open")'
    source = EventSource("video", formula, "batch", "classroom", "ab" * 32)
    pyarrow.dataset.write_dataset(
        with_date(events_table(source, frames(3))),
        tmp_path / "batch" / "events",
        format="parquet",
        partitioning=["source_kind", "date"],
        partitioning_flavor="hive",
    )
    monkeypatch.setenv("HISTORY_TABLE", str(tmp_path / "batch"))
    page = open_tab(AppTest.from_file(APP, default_timeout=TIMEOUT_S).run(), "History")
    page.radio(key="history_store").set_value("Batch table").run()
    # Streamlit's dataframe toolbar downloads the cells as they are shown, without neutralising them.
    assert per_source(page) == {"'" + formula: 3}


def test_a_log_file_held_by_another_program_is_a_warning_and_the_webcam_carries_on(
    history_path, streamer, face_clip
):
    from tests.test_history import held_by_another_process

    with held_by_another_process(history_path):
        page = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
        page.toggle(key="history_log").set_value(True).run()
        open_tab(page, "Webcam")
        streamer.playing = True
        page.run()  # START
        frames = clip_frames(face_clip, 10)
        for frame in frames:
            streamer.callback(frame)
        assert page.session_state["live_recorder"].log.flush()
        page.run()
    assert not page.exception, page.exception
    assert any("in use by another program" in warning.value for warning in page.warning)
    assert metric_values(page)["Frames analysed"] == str(len(frames))


@pytest.fixture
def history_reads(monkeypatch) -> list[str]:
    """Records every query the page runs on the detection log or a batch table."""
    from emotion.history import DetectionLog, ParquetHistory

    reads = []
    for store in (DetectionLog, ParquetHistory):
        original = store.read

        def counting(self, query, original=original, name=store.__name__):
            reads.append(name)
            return original(self, query)

        monkeypatch.setattr(store, "read", counting)
    return reads


def test_a_photo_tab_click_runs_no_history_query(history_path, streamer, history_reads, astronaut_png):
    page = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    page.toggle(key="history_log").set_value(True).run()
    upload_photos(page, ("astronaut.png", astronaut_png, "image/png"))
    open_tab(page, "History")
    assert metric_values(page)["Detections"] == "1"
    assert history_reads  # the open History tab queries the log

    open_tab(page, "Photo")
    history_reads.clear()
    page.button(key=next(button.key for button in page.button if button.key.startswith("another-"))).click()
    page.run()
    photos = ("astronaut.png", astronaut_png, "image/png"), ("grey.png", grey_png(180), "image/png")
    upload_photos(page, *photos)
    assert not page.exception, page.exception
    assert "Quote:" in texts(page)
    assert history_reads == []


def test_the_face_finder_chosen_in_the_sidebar_finds_the_photos_faces(app, astronaut_png, monkeypatch):
    finders, process_photo = [], ui.photo.process_photo

    def recording(data, classifier, settings):
        finders.append(settings.finder)
        return process_photo(data, classifier, settings)

    monkeypatch.setattr(ui.photo, "process_photo", recording)
    finder_box = app.sidebar.selectbox[0]
    assert finder_box.label == "Face finder"
    assert finder_box.value == "blazeface"
    finder_box.set_value("haar").run()
    upload_photos(app, ("astronaut.png", astronaut_png, "image/png"))

    assert finders == ["haar"]
    assert not app.error
