"""The webcam on this device in headless Chromium: the fake camera's clip analysed in the page
with LiteRT.js, the statistics drawn by the server from the results alone, and the bad cases
(a model file that fails its checksum, a camera refused, a reload mid-stream, the tab hidden).

Needs Debian's chromium and Playwright, as tests/test_browser.py; the app is served with the
webcam on this device, its default.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import time

import pytest

from scripts.browser import (
    COUNT_PEER_CONNECTIONS,
    EMOTION_PATTERN,
    choose_webcam_mode,
    chromium,
    device_webcam,
    fake_camera_args,
    metric_value,
    open_app,
    peer_connections,
    start_device_webcam,
    stop_device_webcam,
    write_y4m,
)
from tests.conftest import REPO, PlaywrightError, served_app

LIVE_TIMEOUT_S = 30  # from START to the first live statistics
STREAM_MORE_MS = 4_000  # then the statistics must have moved on
DOCS = REPO / "docs"

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("browser_available")]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with served_app(tmp_path_factory, {"WEBCAM_MODE": "device"}) as url:
        yield url


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory, face_clip):
    return write_y4m(face_clip, tmp_path_factory.mktemp("camera") / "face_clip.y4m")


def frames_analysed(stats) -> int:
    with contextlib.suppress(PlaywrightError, ValueError):
        return int(metric_value(stats, "Frames analysed").inner_text(timeout=1000).replace(",", ""))
    return 0


def wait_for_frames(stats, more_than: int) -> int:
    deadline = time.monotonic() + LIVE_TIMEOUT_S
    while (count := frames_analysed(stats)) <= more_than and time.monotonic() < deadline:
        time.sleep(0.5)
    return count


def test_on_device_the_page_shows_emotions_moving_statistics_and_the_session_csv(
    app_url, playwright, tmp_path, camera_clip
):
    with chromium(playwright, extra_args=fake_camera_args(camera_clip), viewport=(900, 1500)) as page:
        page.context.add_init_script(COUNT_PEER_CONNECTIONS)
        open_app(page, app_url)
        webcam = start_device_webcam(page)
        stats = page.locator(".st-key-live-stats")
        first = wait_for_frames(stats, 0)
        assert first > 0, "no frames were analysed"
        with contextlib.suppress(PlaywrightError):
            stats.get_by_text(EMOTION_PATTERN).first.wait_for(timeout=LIVE_TIMEOUT_S * 1000)
        assert EMOTION_PATTERN.search(stats.inner_text())
        page.wait_for_timeout(STREAM_MORE_MS)
        assert wait_for_frames(stats, first) > first  # the statistics move on while it plays
        fps = float(metric_value(stats, "FPS").inner_text())
        print("on-device FPS shown:", fps)
        assert fps > 0
        assert webcam.locator("video").evaluate("video => video.videoWidth > 0 && video.playsInline")
        stats.locator("[data-testid='stVegaLiteChart'] :is(canvas, svg)").first.wait_for()
        page.locator("[data-testid='stStatusWidget']").wait_for(state="hidden")
        name = "screenshot-webcam-device.png"
        target = DOCS / name if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path / name
        page.screenshot(path=str(target))

        stop_device_webcam(page)
        with page.expect_download() as download:
            page.get_by_role("button", name="Session log CSV").click()
        rows = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
        assert rows and EMOTION_PATTERN.fullmatch(rows[0]["emotion"])
        assert int(rows[-1]["frame"]) > 0
        assert peer_connections(page) == 0  # nothing was streamed to the server


def test_a_model_file_that_fails_its_checksum_is_said_and_the_server_mode_offered(app_url, playwright):
    with chromium(playwright) as page:
        page.route("**/emotion-*.tflite", lambda route: route.fulfill(body=b"not the model"))
        open_app(page, app_url)
        choose_webcam_mode(page, "On this device")
        device_webcam(page).get_by_text("failed its checksum").wait_for()
        page.get_by_text("A model file arrived damaged").wait_for()
        assert page.locator("[data-testid='stException']").count() == 0
        page.get_by_role("button", name="Use the server mode").click()
        page.frame_locator("iframe[title*='webrtc']").get_by_role("button", name="START").wait_for()


def test_a_refused_camera_is_said_without_an_exception(app_url, playwright):
    # The fake camera, but no permission: getUserMedia is refused as a visitor's "Block" would.
    with chromium(playwright, extra_args=["--use-fake-device-for-media-stream"]) as page:
        open_app(page, app_url)
        webcam = start_device_webcam(page)
        webcam.get_by_text("The camera was refused").wait_for()
        page.get_by_text("The camera could not be used").wait_for()
        assert page.locator("[data-testid='stException']").count() == 0


def test_a_hidden_tab_pauses_and_a_reload_mid_stream_starts_afresh(app_url, playwright, camera_clip):
    with chromium(playwright, extra_args=fake_camera_args(camera_clip)) as page:
        open_app(page, app_url)
        webcam = start_device_webcam(page)
        stats = page.locator(".st-key-live-stats")
        assert wait_for_frames(stats, 0) > 0
        frame = next(frame for frame in page.frames if "device_webcam" in frame.url)
        frame.evaluate(
            """() => {
              Object.defineProperty(document, "visibilityState", { value: "hidden", configurable: true });
              document.dispatchEvent(new Event("visibilitychange"));
            }"""
        )
        page.wait_for_timeout(1500)  # the last batch arrives
        paused = frames_analysed(stats)
        page.wait_for_timeout(2500)
        assert frames_analysed(stats) == paused  # hidden: nothing analysed
        page.reload()
        open_app(page, app_url)
        choose_webcam_mode(page, "On this device")
        device_webcam(page).get_by_text("Ready").wait_for()
        assert page.locator("[data-testid='stException']").count() == 0
        assert webcam.get_by_role("button", name="START").is_enabled()
        # The model files, checked, are kept in the browser's cache for the next page.
        frame = next(frame for frame in page.frames if "device_webcam" in frame.url)
        kept = frame.evaluate("caches.open('emotion-lens-models').then((cache) => cache.keys())")
        assert len(kept) >= 2


def test_a_slow_device_drops_frames_and_is_offered_the_server_mode(app_url, playwright, camera_clip):
    with chromium(playwright, extra_args=fake_camera_args(camera_clip)) as page:
        open_app(page, app_url)
        start_device_webcam(page)
        stats = page.locator(".st-key-live-stats")
        assert wait_for_frames(stats, 0) > 0
        cdp = page.context.new_cdp_session(page)
        cdp.send("Emulation.setCPUThrottlingRate", {"rate": 40})  # a device forty times slower
        page.get_by_text("frames are dropped, never queued").last.wait_for(timeout=3 * LIVE_TIMEOUT_S * 1000)
        page.get_by_role("button", name="Use the server mode").wait_for()
        assert page.locator("[data-testid='stException']").count() == 0
        cdp.send("Emulation.setCPUThrottlingRate", {"rate": 1})
        stop_device_webcam(page)


def test_webassembly_that_fails_to_load_is_said_and_the_server_mode_offered(app_url, playwright):
    with chromium(playwright) as page:
        page.route("**/litert_wasm*", lambda route: route.fulfill(status=404, body=b""))
        open_app(page, app_url)
        choose_webcam_mode(page, "On this device")
        page.get_by_text("The model cannot run on this device").first.wait_for()
        assert page.locator("[data-testid='stException']").count() == 0
        page.get_by_role("button", name="Use the server mode").wait_for()
