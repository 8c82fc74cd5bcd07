"""Speed and memory of the engine on this machine: prints figures, asserts nothing.

    python scripts/benchmark.py [--model model/emotion_cnn.keras] [--repeats 50]

Measures: predict_proba per face (N = 1 and N = 32); analyze_image on a 640x480 webcam frame
and on a 12-megapixel photo, with each face finder; LiveAnalyzer.process per frame of the face
clip at 640x480, and a webcam frame in WebRTC's yuv420p analysed and drawn in that format or
through BGR, and the webcam's VP8 and H.264 encoders, aiortc's against the server's (CPU a
frame, PSNR); video file throughput against real time; the engine's cold start (import, load the
model, first result) and peak resident memory in a fresh process. Then, where Chromium and
Playwright are installed (the dev tools), the app itself: from `streamlit run app.py` to the first photo's
result in a headless browser, the frame rate the Webcam tab shows with a fake camera playing
the face clip, and the server's peak resident memory.

The faces and the clip are FER2013's val faces and a recorded face clip from the data folder
($EMOTION_DATA, default ../shared/data: `fer2013/val.npz`, `video/face_clip.avi`), which the
README's figures were measured on. Without them it says so and measures the tests' stand-ins
instead: crops of skimage's astronaut and a clip of the same size and length made from her photo.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import samples  # scripts/samples.py

from emotion.classifier import BUNDLED_MODEL

REPO = Path(__file__).resolve().parent.parent


APP_START_RUNS = 3  # the app is started this many times; the last one also streams the webcam

COLD_START = """
import time, resource
started = time.perf_counter()
import numpy as np
from skimage import data
import emotion
classifier = emotion.load_classifier({model!r})
faces = emotion.analyze_image(data.astronaut(), classifier)
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, len(faces))
"""


def median_ms(function, repeats: int) -> float:
    function()  # warm-up: first calls allocate buffers
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return 1000 * statistics.median(timings)


def benchmark_faces() -> np.ndarray:
    """32 faces, (32, 48, 48) uint8: FER2013's first val faces, or crops of astronaut's face."""
    path = samples.emotion_data_dir() / "fer2013" / "val.npz"
    if not path.is_file():
        print(f"no FER2013 val faces at {path} (set EMOTION_DATA): timing crops of skimage's astronaut")
        return samples.face_crops(32)
    with np.load(path) as archive:
        return archive["images"][:32]


def benchmark_clip(folder: Path) -> Path:
    """The recorded face clip, or the tests' clip of astronaut (same size, rate and length) in `folder`."""
    path = samples.emotion_data_dir() / "video" / "face_clip.avi"
    if not path.is_file():
        print(f"no face clip at {path} (set EMOTION_DATA): timing a clip made from skimage's astronaut")
        return samples.write_face_clip(folder / "face_clip.avi")
    return path


def clip_frames(clip: Path, size: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    import av

    with av.open(str(clip)) as container:
        return [cv2.resize(frame.to_ndarray(format="bgr24"), size) for frame in container.decode(video=0)]


def webcam_encoder_figures(pictures: list) -> None:
    """The webcam's encoders, aiortc's own against the server's (ui/encoder.py), at aiortc's
    starting bitrates: CPU time a frame to encode (and packetise), and the luma PSNR of what
    the browser decodes against the frame sent. pictures: yuv420p av.VideoFrames."""
    from aiortc.codecs import h264_depayload, vp8_depayload
    from aiortc.codecs.h264 import H264Decoder, H264Encoder
    from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.mediastreams import VIDEO_TIME_BASE

    # The page's code is not part of the installed engine: its encoders are read from the checkout.
    spec = importlib.util.spec_from_file_location("webcam_encoders", REPO / "ui" / "encoder.py")
    encoders = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(encoders)
    ServerH264Encoder, ServerVp8Encoder = encoders.ServerH264Encoder, encoders.ServerVp8Encoder

    ticks = 3000  # of VIDEO_TIME_BASE (90 kHz) between frames: 30 fps
    codecs = (
        ("VP8", Vp8Decoder, vp8_depayload, Vp8Encoder, ServerVp8Encoder),
        ("H.264", H264Decoder, h264_depayload, H264Encoder, ServerH264Encoder),
    )
    for codec, decoder_class, depayload, *encoder_classes in codecs:
        for whose, encoder_class in zip(("aiortc's", "the server's"), encoder_classes, strict=True):
            encoder, decoder = encoder_class(), decoder_class()
            cpu_s, sent_bytes, psnrs = 0.0, 0, []
            for index, picture in enumerate(pictures * 2):
                picture.pts, picture.time_base = index * ticks, VIDEO_TIME_BASE
                started = time.process_time()
                payloads, timestamp = encoder.encode(picture)
                cpu_s += time.process_time() - started
                sent_bytes += sum(len(payload) for payload in payloads)
                data = b"".join(depayload(payload) for payload in payloads)
                for shown in decoder.decode(JitterFrame(data, timestamp)):
                    sent = pictures[shown.pts // ticks % len(pictures)]
                    error = np.mean(
                        (shown.to_ndarray()[: shown.height].astype(float) - sent.to_ndarray()[: sent.height])
                        ** 2
                    )
                    psnrs.append(10 * np.log10(255**2 / max(error, 1e-9)))
            frames = 2 * len(pictures)
            print(
                f"webcam encoder {codec}, {whose}: "
                f"{1000 * cpu_s / frames:.2f} ms of CPU a frame, luma PSNR {np.mean(psnrs):.1f} dB, "
                f"{sent_bytes * 8 * 30 / frames / 1000:.0f} kbit/s"
            )


def app_figures(clip: Path, stream_s: float) -> None:
    """Start to first result, the webcam's shown frame rate and peak memory of the real app."""
    from scripts.browser import (
        browser_missing_reason,
        chromium,
        fake_camera_args,
        shown_webcam_rate,
        write_y4m,
    )

    reason = browser_missing_reason()
    if reason is not None:
        print(f"app in a browser: not measured, {reason}")
        return
    from PIL import Image
    from playwright.sync_api import sync_playwright
    from skimage import data

    with tempfile.TemporaryDirectory() as folder, sync_playwright() as driver:
        photo = Path(folder) / "astronaut.png"
        Image.fromarray(data.astronaut()).save(photo)
        camera = write_y4m(clip, Path(folder) / "face_clip.y4m")
        log_path = Path(folder) / "streamlit.log"
        # The browser is up before the clock starts: a visitor's browser is already running.
        with chromium(driver, extra_args=fake_camera_args(camera)) as page:
            starts = []
            for _ in range(APP_START_RUNS - 1):
                with app_with_first_result(page, photo, log_path) as (_server, seconds):
                    starts.append(seconds)
            with app_with_first_result(page, photo, log_path) as (server, seconds):
                starts.append(seconds)
                print(
                    f"app start to first photo result: {statistics.median(starts):.2f} s median "
                    f"({', '.join(f'{each:.2f}' for each in starts)} s, a fresh server each)"
                )
                fps, frames = shown_webcam_rate(page, stream_s)
                print(
                    f"webcam tab after {stream_s:.0f} s of the fake camera: {fps} fps shown, "
                    f"{frames} frames analysed"
                )
                status = Path(f"/proc/{server.process.pid}/status").read_text()
                peak_kb = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
                print(f"app server's peak resident memory: {peak_kb / 1024:.0f} MB")


@contextlib.contextmanager
def app_with_first_result(page, photo: Path, log_path: Path):
    """Start the app, open it in `page` and analyse `photo`; yields (server, seconds it took)."""
    from scripts.browser import open_app, photo_results, serve_app, upload_photo

    started = time.perf_counter()
    with serve_app(log_path) as server:
        open_app(page, server.url)
        upload_photo(page, photo)
        photo_results(page).first.wait_for()
        yield server, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--stream-seconds", type=float, default=10.0, help="webcam time before FPS is read")
    parser.add_argument("--engine-only", action="store_true", help="skip the app in a browser")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        measure(args, benchmark_faces(), benchmark_clip(Path(folder)))


def measure(args: argparse.Namespace, faces: np.ndarray, clip: Path) -> None:
    import emotion
    from emotion.faces import FINDER_NAMES, PHOTO_DETECTOR
    from emotion.live import LiveAnalyzer, LiveSettings
    from emotion.video import process_video

    classifier = emotion.load_classifier(args.model)
    print(f"machine: {cv2.getNumberOfCPUs()} CPUs; model {args.model.name}")

    single = median_ms(lambda: classifier.predict_proba(faces[:1]), args.repeats * 4)
    batch = median_ms(lambda: classifier.predict_proba(faces), args.repeats)
    print(f"predict_proba N=1:  {single:.2f} ms per face")
    print(f"predict_proba N=32: {batch / 32:.3f} ms per face ({batch:.1f} ms per batch)")

    frames = clip_frames(clip)
    frame_rgb = cv2.cvtColor(frames[len(frames) // 2], cv2.COLOR_BGR2RGB)
    photo = cv2.resize(frame_rgb, (4000, 3000), interpolation=cv2.INTER_LINEAR)  # 12 MP
    for finder in FINDER_NAMES:  # the default first
        analyze = functools.partial(
            emotion.analyze_image, classifier=classifier, settings=replace(PHOTO_DETECTOR, finder=finder)
        )
        found = len(analyze(frame_rgb))
        frame_ms = median_ms(functools.partial(analyze, frame_rgb), args.repeats)
        print(f"analyze_image 640x480, {finder} ({found} face): {frame_ms:.2f} ms median")
        found = len(analyze(photo))
        photo_ms = median_ms(functools.partial(analyze, photo), max(5, args.repeats // 5))
        print(f"analyze_image 4000x3000, {finder} ({found} face): {photo_ms:.1f} ms median")

    analyzer = LiveAnalyzer(classifier)
    timings = []
    for repeat in range(3):
        for frame in frames:
            started = time.perf_counter()
            analyzer.process(frame)
            if repeat:  # the first pass warms up
                timings.append(time.perf_counter() - started)
    print(
        f"LiveAnalyzer.process 640x480: {1000 * statistics.median(timings):.2f} ms median, "
        f"{1000 * float(np.percentile(timings, 95)):.2f} ms p95 over {len(timings)} frames"
    )

    # The webcam's frames as WebRTC decodes them (yuv420p), to the frame its encoder takes (yuv420p):
    # analysed and drawn in that format, against the same work through BGR. CPU time, so that
    # whatever else runs on the machine does not count.
    import av

    webrtc_frames = [
        av.VideoFrame.from_ndarray(frame, format="bgr24").reformat(format="yuv420p") for frame in frames
    ]

    def through_bgr(frame):
        annotated, _ = analyzer.process(frame.to_ndarray(format="bgr24"))
        return av.VideoFrame.from_ndarray(annotated, format="bgr24").reformat(format="yuv420p")

    for name, step in (("process_frame, in yuv420p", analyzer.process_frame), ("through BGR", through_bgr)):
        analyzer.reset()
        for frame in webrtc_frames:  # warm-up
            step(frame)
        started = time.process_time()
        for frame in webrtc_frames * 2:
            step(frame)
        cpu_ms = 1000 * (time.process_time() - started) / (2 * len(webrtc_frames))
        print(f"webcam frame 640x480, yuv420p in and out, {name}: {cpu_ms:.2f} ms of CPU a frame (mean)")
    webcam_encoder_figures(webrtc_frames)

    for every in (LiveSettings().detect_every, 1):
        started = time.perf_counter()
        result = process_video(clip.read_bytes(), classifier, settings=LiveSettings(detect_every=every))
        elapsed = time.perf_counter() - started
        print(
            f"video file, faces searched every {every} frame(s) ({result.frames} frames, "
            f"{result.duration_s:.2f} s): {elapsed:.2f} s = {result.duration_s / elapsed:.1f}x real time"
        )

    cold = (
        subprocess.run(
            [sys.executable, "-c", COLD_START.format(model=str(args.model))],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        .stdout.splitlines()[-1]
        .split()
    )
    print(f"cold start to first result: {float(cold[0]):.2f} s; peak resident memory {float(cold[1]):.0f} MB")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"this process's peak resident memory: {peak_mb:.0f} MB")
    if not args.engine_only:
        app_figures(clip, args.stream_seconds)


if __name__ == "__main__":
    main()
