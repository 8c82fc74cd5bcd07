"""Driving the app in headless Chromium: used by tests/test_browser.py and the benchmark and load
scripts.

Needs Debian's chromium (`apt-get install chromium`) and Playwright's Python package.
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
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from emotion import EMOTIONS

REPO = Path(__file__).resolve().parent.parent
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
SERVER_START_TIMEOUT_S = 120  # a cold start on a busy machine
RESULT_TIMEOUT_MS = 120_000  # the first analysis also loads the model
FAKE_CAMERA_SIZE = (640, 480)  # (width, height) of the y4m clip the fake camera plays
EMOTION_PATTERN = re.compile(r"\b(" + "|".join(EMOTIONS) + r")\b")


def browser_missing_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -r requirements-dev.txt)"
    return None


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


class Server(NamedTuple):
    url: str
    process: subprocess.Popen


@contextlib.contextmanager
def serve_app(log_path: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """`streamlit run app.py` on a free port, once it answers; stopped afterwards.

    env: settings for the app (HISTORY_PATH, ...) on top of this process's environment.
    """
    port = free_port()
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
        server = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not healthy(f"{url}/_stcore/health"):
            if server.poll() is not None:
                log_tail = log_path.read_text()[-3000:]
                raise RuntimeError(f"streamlit exited with {server.returncode}:\n{log_tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not answer within {SERVER_START_TIMEOUT_S} s")
            time.sleep(0.1)
        yield Server(url, server)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextlib.contextmanager
def chromium(playwright, extra_args=(), viewport=(1280, 1000)):
    """A page in a fresh headless Chromium."""
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


def fake_camera_args(clip: Path) -> list[str]:
    """Chromium flags that grant camera access and play `clip` (a .y4m file) as the camera."""
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}",
    ]


def open_app(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name="Emotion Lens").wait_for()
    # The first script run loads the model; the Photo tab's hint appears after it.
    page.get_by_text("Upload a photo with a face").wait_for(timeout=RESULT_TIMEOUT_MS)


def upload_photo(page, *paths: Path) -> None:
    """Choose the files in the Photo tab's uploader, in place of those chosen before."""
    page.locator(".st-key-photos input[type=file]").set_input_files([str(path) for path in paths])


def photo_results(page):
    return page.locator("[class*='st-key-suggestions-']")


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


def start_webcam(page):
    """Open the Webcam tab and press START; returns the streamer's frame."""
    page.get_by_role("tab", name="Webcam").click()
    streamer = page.frame_locator("iframe[title*='webrtc']")
    streamer.get_by_role("button", name=re.compile("start", re.IGNORECASE)).click()
    return streamer


def stop_webcam(page) -> None:
    """Press STOP in the Webcam tab and wait for the session's summary."""
    streamer = page.frame_locator("iframe[title*='webrtc']")
    streamer.get_by_role("button", name=re.compile("stop", re.IGNORECASE)).click()
    page.get_by_text("Session summary").wait_for()


def shown_webcam_rate(page, stream_s: float) -> tuple[str, str]:
    """Press START, let the fake camera play for stream_s seconds: (FPS shown, frames analysed)."""
    start_webcam(page)
    stats = page.locator(".st-key-live-stats")
    frames = metric_value(stats, "Frames analysed")
    frames.wait_for()
    page.wait_for_timeout(1000 * stream_s)
    return metric_value(stats, "FPS").inner_text(), frames.inner_text()


def metric_value(container, label: str):
    """The value element of the metric named `label` in `container` (the live panel, History's results)."""
    metric = container.locator("[data-testid='stMetric']").filter(has_text=label)
    return metric.locator("[data-testid='stMetricValue']")


def switch_on_detection_log(page) -> None:
    """Click the sidebar's switch and wait for the run it starts to finish."""
    page.get_by_test_id("stSidebarUserContent").get_by_text("Keep a detection log").click()
    page.locator("[data-testid='stStatusWidget']").wait_for(state="hidden")


# Counts the RTCPeerConnections a page (and each of its frames) makes, in window.peerConnections.
COUNT_PEER_CONNECTIONS = """
window.peerConnections = 0;
for (const name of ["RTCPeerConnection", "webkitRTCPeerConnection"]) {
  const Original = window[name];
  if (Original) {
    window[name] = new Proxy(Original, {
      construct(target, args) { window.peerConnections += 1; return new target(...args); },
    });
  }
}
"""
DEVICE_READY_TIMEOUT_MS = 120_000  # LiteRT.js's WebAssembly and the models, loaded on a busy machine


def device_webcam(page):
    """The on-device webcam's frame (the component's iframe)."""
    return page.frame_locator("iframe[title*='device_webcam']")


def choose_webcam_mode(page, label: str) -> None:
    """Open the Webcam tab and pick its mode ("On this device" or "On the server")."""
    page.get_by_role("tab", name="Webcam").click()
    page.get_by_test_id("stRadio").get_by_text(label).click()


def start_device_webcam(page):
    """Open the Webcam tab on this device, wait for its models, press START; returns its frame."""
    choose_webcam_mode(page, "On this device")
    webcam = device_webcam(page)
    webcam.get_by_text("Ready").wait_for(timeout=DEVICE_READY_TIMEOUT_MS)
    webcam.get_by_role("button", name="START").click()
    return webcam


def stop_device_webcam(page) -> None:
    """Press the on-device webcam's STOP and wait for the session's summary."""
    device_webcam(page).get_by_role("button", name="STOP").click()
    page.get_by_text("Session summary").wait_for()


def peer_connections(page) -> int:
    """RTCPeerConnections made so far by the page and its frames (COUNT_PEER_CONNECTIONS)."""
    return sum(frame.evaluate("window.peerConnections || 0") for frame in page.frames)
