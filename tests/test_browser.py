"""What only a browser shows: the page in headless Chromium, with uploads and a fake webcam.

Needs Debian's chromium (`apt-get install chromium`) and Playwright's Python package; without
them these tests are skipped, unless REQUIRE_BROWSER=1 (as in .ci/run) makes that a failure.
Screenshots go to pytest's tmp_path; with UPDATE_SCREENSHOTS=1 they replace those in docs/.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts import samples
from scripts.browser import (
    EMOTION_PATTERN,
    chromium,
    fake_camera_args,
    metric_value,
    open_app,
    photo_results,
    serve_app,
    shown_webcam_rate,
    start_webcam,
    stop_webcam,
    switch_on_detection_log,
    upload_photo,
    write_y4m,
)
from tests.conftest import REPO, PlaywrightError, served_app

LIVE_TIMEOUT_MS = 20_000  # from pressing START to the first live statistics
STREAM_MORE_MS = 5_000  # then the stream runs this much longer before the FPS figure is read
WEBCAM_SESSION_S = 6  # the History test's webcam session, once its first frames are analysed
DOCS = REPO / "docs"

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("browser_available")]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with served_app(tmp_path_factory) as url:
        yield url


def screenshot_path(tmp_path: Path, name: str) -> Path:
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        return DOCS / name
    return tmp_path / name


def write_png(path: Path, rgb: np.ndarray) -> Path:
    Image.fromarray(rgb).save(path)
    return path


def test_photo_upload_shows_annotated_face_and_recovers_from_a_corrupt_file(app_url, playwright, tmp_path):
    from skimage import data

    # Her head leans 30 degrees: the default face finder finds it, and the box stays upright.
    astronaut = write_png(tmp_path / "astronaut.png", samples.turned_astronaut(30))
    mirrored = write_png(tmp_path / "mirrored.png", data.astronaut()[:, ::-1].copy())
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"definitely not the rest of a PNG")

    with chromium(playwright, viewport=(900, 1400)) as page:
        open_app(page, app_url)
        upload_photo(page, astronaut)
        result = page.locator(".st-key-photo-0")
        result.locator("[data-testid='stImage'] img").first.wait_for()
        suggestions = photo_results(page).first
        suggestions.wait_for()
        text = suggestions.inner_text()
        assert EMOTION_PATTERN.search(text), text
        for heading in ("Quote:", "Activity:", "Music:"):
            assert heading in text
        result.get_by_role("button", name="Results CSV").wait_for()
        page.wait_for_timeout(1000)  # let the bar chart finish drawing
        result.screenshot(path=str(screenshot_path(tmp_path, "screenshot-photo.png")))

        upload_photo(page, corrupt)
        page.locator(".st-key-photo-1").get_by_text("corrupt.png").wait_for()
        page.locator(".st-key-photo-1 [data-testid='stAlertContentError']").wait_for()
        assert page.locator("[data-testid='stAlertContentError']").count() == 1

        upload_photo(page, mirrored)
        page.locator(".st-key-photo-2 [class*='st-key-suggestions-']").wait_for()
        assert photo_results(page).count() == 2


def test_write_y4m_makes_whole_i420_frames(tmp_path, face_clip):
    clip = write_y4m(face_clip, tmp_path / "clip.y4m", size=(64, 48))
    data = clip.read_bytes()
    header, _, frames = data.partition(b"\n")
    assert header.startswith(b"YUV4MPEG2 W64 H48 F30:1")
    frame_bytes = len(b"FRAME\n") + 64 * 48 * 3 // 2
    assert len(frames) % frame_bytes == 0
    assert len(frames) // frame_bytes > 10


def test_webcam_streams_annotated_video_and_live_statistics(app_url, playwright, tmp_path, face_clip):
    clip = write_y4m(face_clip, tmp_path / "face_clip.y4m")
    with chromium(playwright, extra_args=fake_camera_args(clip), viewport=(900, 1500)) as page:
        open_app(page, app_url)
        streamer = start_webcam(page)

        stats = page.locator(".st-key-live-stats")
        deadline = time.monotonic() + LIVE_TIMEOUT_MS / 1000
        frame_count = 0
        while time.monotonic() < deadline:
            # The panel is redrawn every second: an element may vanish between two reads.
            with contextlib.suppress(PlaywrightError, ValueError):
                value = metric_value(stats, "Frames analysed").inner_text(timeout=1000)
                frame_count = int(value.replace(",", ""))
                if frame_count > 0 and EMOTION_PATTERN.search(stats.inner_text(timeout=1000)):
                    break
            time.sleep(0.5)
        assert frame_count > 0, "no frames were analysed"
        assert EMOTION_PATTERN.search(stats.inner_text())

        page.wait_for_timeout(STREAM_MORE_MS)  # so that the FPS figure covers a steady stream
        stats.locator("[data-testid='stVegaLiteChart'] :is(canvas, svg)").first.wait_for()
        print("live FPS shown:", metric_value(stats, "FPS").inner_text())
        assert streamer.locator("video").first.evaluate("video => video.videoWidth") > 0
        # Between two refreshes of the panel, so that nothing is drawn faded as stale.
        page.locator("[data-testid='stStatusWidget']").wait_for(state="hidden")
        page.screenshot(path=str(screenshot_path(tmp_path, "screenshot-webcam.png")))

        # Another tab open for a while: the stream plays on, and the same session goes on counting.
        shown_before = frames_analysed(stats)
        page.get_by_role("tab", name="Photo").click()
        stats.wait_for(state="detached")  # a hidden tab draws no statistics
        page.wait_for_timeout(2000)
        page.get_by_role("tab", name="Webcam").click()
        deadline = time.monotonic() + LIVE_TIMEOUT_MS / 1000
        while frames_analysed(stats) <= shown_before and time.monotonic() < deadline:
            time.sleep(0.5)
        assert frames_analysed(stats) > shown_before
        assert streamer.locator("video").first.evaluate("video => !video.paused && video.videoWidth > 0")
        stop_webcam(page)


def frames_analysed(stats) -> int:
    """The live panel's "Frames analysed"; 0 while it is not (or not yet) drawn."""
    # The panel is redrawn every second: an element may vanish between two reads.
    with contextlib.suppress(PlaywrightError, ValueError):
        return int(metric_value(stats, "Frames analysed").inner_text(timeout=1000).replace(",", ""))
    return 0


def test_video_upload_shows_annotated_video_and_timeline(app_url, playwright, face_clip):
    with chromium(playwright) as page:
        open_app(page, app_url)
        page.get_by_role("tab", name="Video").click()
        page.locator(".st-key-video input[type=file]").set_input_files(str(face_clip))
        results = page.locator(".st-key-video-results")
        results.wait_for()
        page.locator("[data-testid='stVideo']").wait_for()  # the player's code loads lazily
        assert page.locator("[data-testid='stVideo']").count() == 1
        assert results.get_by_text("Emotion of each face over time").is_visible()
        assert EMOTION_PATTERN.search(results.inner_text())


def test_history_tab_shows_a_sessions_detections_and_deletes_them(app_url, playwright, tmp_path, face_clip):
    from skimage import data

    photos = [
        write_png(tmp_path / "astronaut.png", data.astronaut()),
        write_png(tmp_path / "people-1.png", samples.group_photo(0)),
        write_png(tmp_path / "people-2.png", samples.group_photo(6)),
    ]
    clip = write_y4m(face_clip, tmp_path / "face_clip.y4m")
    with chromium(playwright, extra_args=fake_camera_args(clip), viewport=(900, 1800)) as page:
        open_app(page, app_url)
        switch_on_detection_log(page)
        shown_webcam_rate(page, WEBCAM_SESSION_S)
        stop_webcam(page)
        page.get_by_role("tab", name="Photo").click()
        upload_photo(page, *photos)
        for index in range(len(photos)):
            page.locator(f".st-key-photo-{index} [class*='st-key-suggestions-']").wait_for()
        page.get_by_role("tab", name="History").click()
        results = page.locator(".st-key-history-results")
        results.wait_for()
        assert history_metric(results, "Sources") == len(photos) + 1  # the webcam's session and each photo
        assert history_metric(results, "Detections") > len(photos)
        charts = results.locator("[data-testid='stVegaLiteChart']")
        charts.nth(2).wait_for()
        assert charts.count() == 3
        assert results.locator("[data-testid='stDataFrame']").count() == 1  # drawn on a canvas
        results.get_by_role("button", name="Selection as CSV").wait_for()
        page.wait_for_timeout(1000)  # let the charts finish drawing
        results.screenshot(path=str(screenshot_path(tmp_path, "screenshot-history.png")))

        page.get_by_role("button", name="Delete the history...").click()
        page.get_by_text(re.compile(r"Delete all [\d,]+ detections")).wait_for()
        page.get_by_role("button", name="Delete everything").click()
        page.get_by_text("No detections are kept yet").wait_for()
        results.wait_for(state="detached")  # the charts are gone once the run has finished


def test_the_per_source_table_fits_a_900_pixel_window_beside_the_sidebar(playwright, tmp_path):
    from emotion.events import EventSource
    from emotion.history import DetectionLog
    from tests.test_history import START, frames

    log = DetectionLog(tmp_path / "detections.duckdb", interval_s=60.0)
    # A webcam session's name is the longest the page gives a source.
    webcam = EventSource("webcam", "webcam 2026-12-04 18:14:19 47a078", "app", "general", "ab" * 32)
    log.submit(webcam, frames(40))
    log.submit(EventSource("photo", "people-1.png", "app", "general", "ab" * 32), frames(2, start=START + 30))
    assert log.flush()
    log.close()
    settings = {"HISTORY_PATH": str(tmp_path / "detections.duckdb")}
    with (
        serve_app(tmp_path / "streamlit.log", env=settings) as server,
        chromium(playwright, viewport=(900, 1400)) as page,
    ):
        open_app(page, server.url)
        page.get_by_role("tab", name="History").click()
        table = page.locator(".st-key-history-results [data-testid='stDataFrame']")
        table.wait_for()
        page.wait_for_timeout(500)  # the grid sizes its columns once drawn
        # The grid scrolls sideways when its columns are wider than the page leaves it.
        content, shown = table.evaluate(
            "frame => { const grid = frame.querySelector('.dvn-scroller');"
            " return [grid.scrollWidth, grid.clientWidth]; }"
        )
    assert content <= shown


def history_metric(results, label: str) -> int:
    return int(metric_value(results, label).inner_text().replace(",", ""))
