"""What only a browser shows: the page in headless Chromium, with uploads and a fake webcam.

Needs Debian's chromium (`apt-get install chromium`) and Playwright's Python package; without
them these tests are skipped, unless REQUIRE_BROWSER=1 (as in .ci/run) makes that a failure.
Screenshots go to pytest's tmp_path; with UPDATE_SCREENSHOTS=1 they replace those in docs/.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emotion import EMOTIONS
from tests.conftest import FACE_CLIP, REPO

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--mute-audio",
]
SERVER_START_TIMEOUT_S = 120  # a cold start imports Streamlit, TensorFlow and aiortc
RESULT_TIMEOUT_MS = 120_000  # the first analysis also loads the model
LIVE_TIMEOUT_MS = 20_000  # from pressing START to the first live statistics
STREAM_MORE_MS = 5_000  # then the stream runs this much longer before the FPS figure is read
EMOTION_PATTERN = re.compile(r"\b(" + "|".join(EMOTIONS) + r")\b")
FAKE_CAMERA_SIZE = (640, 480)  # (width, height) of the y4m clip the fake camera plays
DOCS = REPO / "docs"

pytestmark = pytest.mark.browser


def browser_missing_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -r requirements-dev.txt)"
    return None


@pytest.fixture(scope="module", autouse=True)
def _browser_available():
    reason = browser_missing_reason()
    if reason is None:
        return
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


try:
    from playwright.sync_api import Error as PlaywrightError
except ImportError:  # the module's tests are skipped (or fail) by _browser_available
    PlaywrightError = Exception


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """The app served by `streamlit run` on a free port; stopped after the module's tests."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "streamlit.log"
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.headless=true",
        f"--server.port={port}",
        "--server.address=127.0.0.1",
        "--server.fileWatcherType=none",
        "--browser.gatherUsageStats=false",
    ]
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"streamlit exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            if healthy(f"{url}/_stcore/health"):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer within {SERVER_START_TIMEOUT_S} s")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        print(f"server log: {log_path}")


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@contextlib.contextmanager
def chromium(playwright, extra_args=(), viewport=(1280, 1000)):
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *extra_args]
    )
    try:
        context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        page = context.new_page()
        page.set_default_timeout(RESULT_TIMEOUT_MS)
        yield page
    finally:
        browser.close()


def screenshot_path(tmp_path: Path, name: str) -> Path:
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        return DOCS / name
    return tmp_path / name


def open_app(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name="Emotion Lens").wait_for()
    # The first script run loads the model; the Photo tab's hint appears after it.
    page.get_by_text("Upload a photo with a face").wait_for(timeout=RESULT_TIMEOUT_MS)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    Image.fromarray(rgb).save(path)
    return path


def upload_photo(page, path: Path) -> None:
    page.locator(".st-key-photos input[type=file]").set_input_files(str(path))


def photo_results(page):
    return page.locator("[class*='st-key-suggestions-']")


def test_photo_upload_shows_annotated_face_and_recovers_from_a_corrupt_file(app_url, playwright, tmp_path):
    from skimage import data

    astronaut = write_png(tmp_path / "astronaut.png", data.astronaut())
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
        page.get_by_text("corrupt.png:").wait_for()
        assert page.locator("[data-testid='stAlertContentError']").count() == 1

        upload_photo(page, mirrored)
        page.locator(".st-key-photo-2 [class*='st-key-suggestions-']").wait_for()
        assert photo_results(page).count() == 2


def write_y4m(source: Path, target: Path, size=FAKE_CAMERA_SIZE) -> Path:
    """The clip as raw YUV4MPEG2 (I420), the format Chromium's fake camera plays in a loop."""
    import av

    width, height = size
    with av.open(str(source)) as container, open(target, "wb") as out:
        rate = container.streams.video[0].average_rate or 30
        out.write(
            f"YUV4MPEG2 W{width} H{height} F{rate.numerator}:{rate.denominator} Ip A1:1 C420jpeg\n".encode()
        )
        for frame in container.decode(video=0):
            i420 = frame.reformat(width=width, height=height, format="yuv420p").to_ndarray()  # (H*3/2, W)
            out.write(b"FRAME\n")
            out.write(np.ascontiguousarray(i420).tobytes())
    return target


def test_write_y4m_makes_whole_i420_frames(tmp_path):
    clip = write_y4m(FACE_CLIP, tmp_path / "clip.y4m", size=(64, 48))
    data = clip.read_bytes()
    header, _, frames = data.partition(b"\n")
    assert header.startswith(b"YUV4MPEG2 W64 H48 F30:1")
    frame_bytes = len(b"FRAME\n") + 64 * 48 * 3 // 2
    assert len(frames) % frame_bytes == 0
    assert len(frames) // frame_bytes > 10


def test_webcam_streams_annotated_video_and_live_statistics(app_url, playwright, tmp_path):
    clip = write_y4m(FACE_CLIP, tmp_path / "face_clip.y4m")
    fake_camera = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}",
    ]
    with chromium(playwright, extra_args=fake_camera, viewport=(900, 1500)) as page:
        open_app(page, app_url)
        page.get_by_role("tab", name="Webcam").click()
        streamer = page.frame_locator("iframe[title*='webrtc']")
        streamer.get_by_role("button", name=re.compile("start", re.IGNORECASE)).click()

        stats = page.locator(".st-key-live-stats")
        frames = stats.locator("[data-testid='stMetric']").filter(has_text="Frames analysed")
        deadline = time.monotonic() + LIVE_TIMEOUT_MS / 1000
        frame_count = 0
        while time.monotonic() < deadline:
            # The panel is redrawn every second: an element may vanish between two reads.
            with contextlib.suppress(PlaywrightError, ValueError):
                value = frames.locator("[data-testid='stMetricValue']").inner_text(timeout=1000)
                frame_count = int(value.replace(",", ""))
                if frame_count > 0 and EMOTION_PATTERN.search(stats.inner_text(timeout=1000)):
                    break
            time.sleep(0.5)
        assert frame_count > 0, "no frames were analysed"
        assert EMOTION_PATTERN.search(stats.inner_text())

        page.wait_for_timeout(STREAM_MORE_MS)  # so that the FPS figure covers a steady stream
        stats.locator("[data-testid='stVegaLiteChart'] :is(canvas, svg)").first.wait_for()
        fps = stats.locator("[data-testid='stMetric']").filter(has_text="FPS")
        print("live FPS shown:", fps.locator("[data-testid='stMetricValue']").inner_text())
        assert streamer.locator("video").first.evaluate("video => video.videoWidth") > 0
        # Between two refreshes of the panel, so that nothing is drawn faded as stale.
        page.locator("[data-testid='stStatusWidget']").wait_for(state="hidden")
        page.screenshot(path=str(screenshot_path(tmp_path, "screenshot-webcam.png")))
        streamer.get_by_role("button", name=re.compile("stop", re.IGNORECASE)).click()
        page.get_by_text("Session summary").wait_for()


def test_video_upload_shows_annotated_video_and_timeline(app_url, playwright):
    with chromium(playwright) as page:
        open_app(page, app_url)
        page.get_by_role("tab", name="Video").click()
        page.locator(".st-key-video input[type=file]").set_input_files(str(FACE_CLIP))
        results = page.locator(".st-key-video-results")
        results.wait_for()
        page.locator("[data-testid='stVideo']").wait_for()  # the player's code loads lazily
        assert page.locator("[data-testid='stVideo']").count() == 1
        assert results.get_by_text("Emotion of each face over time").is_visible()
        assert EMOTION_PATTERN.search(results.inner_text())
