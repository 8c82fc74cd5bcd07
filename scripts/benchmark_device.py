"""The webcam on this device, timed in headless Chromium: prints figures, asserts nothing.

    python scripts/benchmark_device.py                 # 20 s of the face clip at 640x480
    python scripts/benchmark_device.py --seconds 60 --clip my_clip.avi

Serves the app (`streamlit run app.py`, the webcam on this device), opens the Webcam tab in a
headless Chromium whose fake camera plays the benchmark's face clip, presses START and lets it
stream. Printed, from the page's own measurements (ui/components/device_webcam/src/index.js):
how long LiteRT.js's WebAssembly and the two models took to load, the time from START to the
first analysed frame, the frames analysed and dropped a second, and the browser's mean time a
frame by stage (grab: the video frame's pixels; gray; detect: BlazeFace's looks on every
detect_every-th frame, averaged over all frames; follow: template matching in between; crop;
classify; draw: the overlay), as the page and server share this machine's cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import browser as web
from benchmark import benchmark_clip

STAGE_ORDER = ("grab", "gray", "detect", "follow", "crop", "classify", "draw", "total")
READ_MEASURED = "() => JSON.parse(JSON.stringify(window.deviceWebcam.measured))"


def device_frame(page):
    """The on-device webcam's frame (its own window, where its measurements are)."""
    return next(frame for frame in page.frames if "device_webcam" in frame.url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the measured stream")
    parser.add_argument("--warm-up", type=float, default=3.0, help="seconds of streaming before measuring")
    parser.add_argument("--clip", type=Path, help="video played by the fake camera (default: the face clip)")
    args = parser.parse_args()
    reason = web.browser_missing_reason()
    if reason is not None:
        sys.exit(f"cannot run: {reason}")

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as name, sync_playwright() as driver:
        folder = Path(name)
        clip = web.write_y4m(args.clip or benchmark_clip(folder), folder / "clip.y4m")
        env = {"WEBCAM_MODE": "device", "HISTORY_PATH": str(folder / "detections.duckdb")}
        camera = web.fake_camera_args(clip)
        with (
            web.serve_app(folder / "streamlit.log", env=env) as server,
            web.chromium(driver, extra_args=camera) as page,
        ):
            web.open_app(page, server.url)
            web.start_device_webcam(page)
            frame = device_frame(page)
            time.sleep(args.warm_up)
            before, started = frame.evaluate(READ_MEASURED), time.monotonic()
            time.sleep(args.seconds)
            after, elapsed = frame.evaluate(READ_MEASURED), time.monotonic() - started
            web.stop_device_webcam(page)
    loads = after["loadMs"]
    print(
        f"loading: LiteRT.js's WebAssembly {loads.get('runtime', 0):.0f} ms, the emotion model and "
        f"BlazeFace {loads.get('models', 0):.0f} ms; first frame analysed {after['firstFrameMs']:.0f} ms "
        "after START"
    )
    frames = after["frames"] - before["frames"]
    dropped = after["dropped"] - before["dropped"]
    print(
        f"{frames / elapsed:.1f} frames a second analysed, {dropped / elapsed:.1f} dropped "
        f"({frames} and {dropped} in {elapsed:.0f} s)"
    )
    presented = (frames + dropped) / elapsed
    print(f"the video presented {presented:.1f} frames a second; browser time a frame, by stage:")
    for stage in STAGE_ORDER:
        spent = after["stagesMs"].get(stage, 0.0) - before["stagesMs"].get(stage, 0.0)
        print(f"    {stage:<9} {spent / max(frames, 1):6.2f} ms")


if __name__ == "__main__":
    main()
