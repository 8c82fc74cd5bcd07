"""Figures of the detection log and the batch command on this machine: prints them, asserts nothing.

    python scripts/benchmark_history.py [--photos 48] [--video-copies 4] [--stream-seconds 20]

- Batch throughput on the same inputs: photos a second (variants of skimage's astronaut,
  640x480) and video frames a second (copies of the recorded face clip in $EMOTION_DATA, or of
  the tests' clip made from the astronaut where that is absent; see scripts/benchmark.py), for
  the local engine with 1 and 2 processes and for Spark on local[2]. Each run's time covers the
  whole command (worker start, model loads, reading, writing Parquet) except starting the
  SparkSession and its Python workers, which a first, untimed job does (as on a running cluster).
- The detection log's size for an hour of one face at 30 fps: 108,000 events appended by the
  log's writer thread as the webcam hands them over (30 a second, one batch a second), then the
  DuckDB file's size.
- The webcam's work per frame (LiveAnalyzer.process and handing the faces to the log) with the
  log off and on, in turn frame by frame over the clip at 640x480.
- The frame rate the Webcam tab shows, with the detection log off and on (the app in headless
  Chromium with a fake camera playing the clip), where Chromium and Playwright are installed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from benchmark import benchmark_clip, clip_frames  # scripts/benchmark.py

HOUR_OF_EVENTS = 30 * 3600  # one face at 30 fps for an hour


def make_inputs(folder: Path, photos: int, video_copies: int, clip: Path) -> tuple[Path, Path, int]:
    """(photo folder, video folder, video frames in all)."""
    import av
    import cv2
    from PIL import Image
    from skimage import data

    photo_folder, video_folder = folder / "photos", folder / "videos"
    photo_folder.mkdir()
    video_folder.mkdir()
    astronaut = cv2.resize(data.astronaut(), (480, 480))
    for index in range(photos):
        frame = np.full((480, 640, 3), 40 + 4 * index % 200, dtype=np.uint8)
        frame[:, 80:560] = astronaut if index % 2 else astronaut[:, ::-1]
        Image.fromarray(frame).save(photo_folder / f"photo-{index:03d}.png")
    for index in range(video_copies):
        (video_folder / f"clip-{index}{clip.suffix}").write_bytes(clip.read_bytes())
    with av.open(str(clip)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    return photo_folder, video_folder, frames * video_copies


def batch_figures(photos: int, video_copies: int) -> None:
    from emotion.batch import run_batch, spark_session
    from emotion.classifier import BUNDLED_MODEL

    runs = [
        ("local, 1 process", "local", 1),
        ("local, 2 processes", "local", 2),
        ("spark local[2]", "spark", None),
    ]
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        clip = benchmark_clip(folder)
        photo_folder, video_folder, video_frames = make_inputs(folder, photos, video_copies, clip)
        print(f"inputs: {photos} photos of 640x480; {video_copies} copies of {clip}, {video_frames} frames")
        options = {
            "model": BUNDLED_MODEL,
            "preset": "general",
            "detect_every": 5,
            "progress": lambda line: None,
        }
        try:
            spark_session("local[2]").sparkContext.setLogLevel("ERROR")
            # Untimed: a first job starts Spark's Python workers, which later jobs reuse.
            warm_up = [str(next(photo_folder.iterdir()))]
            run_batch(warm_up, str(folder / "warm-up"), engine="spark", master="local[2]", **options)
        except Exception as error:  # no PySpark or no Java: the local figures still count
            print(f"spark: not measured ({error})")
            runs = runs[:2]
        for label, engine, processes in runs:
            for what, inputs, count, unit in (
                ("photos", photo_folder, photos, "photos"),
                ("videos", video_folder, video_frames, "frames"),
            ):
                out = folder / f"out-{engine}-{processes}-{what}"
                started = time.perf_counter()
                run_batch(
                    [str(inputs)], str(out), engine=engine, processes=processes, master="local[2]", **options
                )
                elapsed = time.perf_counter() - started
                print(f"batch, {label}, {what}: {count / elapsed:.1f} {unit}/s ({count} in {elapsed:.1f} s)")


def log_size_figure() -> None:
    from emotion.events import EventSource, FrameFaces
    from emotion.faces import Box
    from emotion.history import DetectionLog
    from emotion.labels import EMOTIONS
    from emotion.results import Face

    rng = np.random.default_rng(0)
    source = EventSource("webcam", "webcam 2026-01-01 09:00:00 3f9a2c", "app", "general", "0" * 64)
    start = time.time()
    with tempfile.TemporaryDirectory() as temporary:
        log = DetectionLog(Path(temporary) / "detections.duckdb")
        started = time.perf_counter()
        for second in range(HOUR_OF_EVENTS // 30):
            frames = []
            for index in range(second * 30, second * 30 + 30):
                # A face that sways a little, with probabilities that change every frame.
                probabilities = rng.dirichlet(np.full(len(EMOTIONS), 0.5)).astype(np.float32)
                box = Box(int(240 + rng.integers(-8, 9)), int(140 + rng.integers(-8, 9)), 160, 160)
                face = Face(box, probabilities, EMOTIONS[int(np.argmax(probabilities))], id=1)
                frames.append(FrameFaces(index, index / 30, start + index / 30, 640, 480, [face]))
            log.submit(source, frames)
            log.flush()  # one batch a second, as the writer does for a live webcam
        log.close()
        elapsed = time.perf_counter() - started
        size_mb = log.path.stat().st_size / 1e6
        print(
            f"detection log, one face for an hour at 30 fps ({log.status().events_written:,} events, "
            f"written in {elapsed:.1f} s): {size_mb:.1f} MB on disk"
        )


def frame_cost_figures(passes: int) -> None:
    """The webcam's work per frame (analyse, draw, hand the faces to the log), log on and off in
    turn, frame by frame, so that both see the same load on a busy machine."""
    from emotion.classifier import load_classifier
    from emotion.events import EventSource
    from emotion.history import DetectionLog
    from emotion.live import LiveAnalyzer, LiveRecorder

    classifier = load_classifier()
    with tempfile.TemporaryDirectory() as temporary:
        frames = clip_frames(benchmark_clip(Path(temporary)))
        log = DetectionLog(Path(temporary) / "detections.duckdb")
        analyzer, recorder = LiveAnalyzer(classifier), LiveRecorder()
        recorder.restart(EventSource("webcam", "benchmark", "app", "general", classifier.sha256))
        timings: dict[bool, list[float]] = {False: [], True: []}
        for index in range(passes * len(frames)):
            log_on = index % 2 == 1
            recorder.log = log if log_on else None
            frame = frames[index % len(frames)]
            started = time.perf_counter()
            _, faces = analyzer.process(frame)
            recorder.record(faces, frame.shape[1], frame.shape[0])
            timings[log_on].append(time.perf_counter() - started)
        log.close()
        for log_on, label in ((False, "off"), (True, "on")):
            milliseconds = 1000 * np.array(timings[log_on])
            print(
                f"webcam frame, detection log {label}: {np.median(milliseconds):.2f} ms median, "
                f"{np.percentile(milliseconds, 95):.2f} ms p95 over {len(milliseconds)} frames"
            )
        print(f"  events written meanwhile: {log.status().events_written:,}")


def webcam_figures(stream_s: float) -> None:
    from scripts.browser import (
        browser_missing_reason,
        chromium,
        fake_camera_args,
        open_app,
        serve_app,
        shown_webcam_rate,
        switch_on_detection_log,
        write_y4m,
    )

    reason = browser_missing_reason()
    if reason is not None:
        print(f"webcam frame rate: not measured, {reason}")
        return
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as temporary, sync_playwright() as driver:
        folder = Path(temporary)
        camera = write_y4m(benchmark_clip(folder), folder / "face_clip.y4m")
        log_path = folder / "detections.duckdb"
        with serve_app(folder / "streamlit.log", env={"HISTORY_PATH": str(log_path)}) as server:
            for log_on in (False, True):
                with chromium(driver, extra_args=fake_camera_args(camera)) as page:
                    open_app(page, server.url)
                    if log_on:
                        switch_on_detection_log(page)
                    fps, frames = shown_webcam_rate(page, stream_s)
                    print(
                        f"webcam tab, detection log {'on' if log_on else 'off'}, after {stream_s:.0f} s: "
                        f"{fps} fps shown, {frames} frames analysed"
                    )
        size = log_path.stat().st_size / 1e6 if log_path.exists() else 0.0
        print(f"detection log after the webcam session: {size:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=48, help="photos in the batch input")
    parser.add_argument("--video-copies", type=int, default=4, help="copies of the clip in the batch input")
    parser.add_argument("--stream-seconds", type=float, default=20.0, help="webcam time before FPS is read")
    parser.add_argument("--frame-passes", type=int, default=4, help="passes over the clip for the frame cost")
    parser.add_argument("--skip", nargs="*", default=(), choices=("batch", "log", "frame", "webcam"))
    args = parser.parse_args()
    if "log" not in args.skip:
        log_size_figure()
    if "frame" not in args.skip:
        frame_cost_figures(args.frame_passes)
    if "batch" not in args.skip:
        batch_figures(args.photos, args.video_copies)
    if "webcam" not in args.skip:
        webcam_figures(args.stream_seconds)


if __name__ == "__main__":
    main()
