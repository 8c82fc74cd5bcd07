"""Speed and memory of the engine on this machine: prints figures, asserts nothing.

    python scripts/benchmark.py [--model model/emotion_cnn.keras] [--repeats 50]

Measures: predict_proba per face (N = 1 and N = 32); analyze_image on a 640x480 webcam frame
and on a 12-megapixel photo; LiveAnalyzer.process per frame of the face clip at 640x480; video
file throughput against real time; cold start (import, load the model, first result) and peak
resident memory of a fresh process.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FACE_CLIP = REPO.parent / "shared" / "data" / "video" / "face_clip.avi"
VAL_FACES = REPO.parent / "shared" / "data" / "fer2013" / "val.npz"

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


def clip_frames(size: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    import av

    with av.open(str(FACE_CLIP)) as container:
        return [cv2.resize(frame.to_ndarray(format="bgr24"), size) for frame in container.decode(video=0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "model" / "emotion_cnn.keras")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    import emotion
    from emotion.live import LiveAnalyzer, LiveSettings
    from emotion.video import process_video

    classifier = emotion.load_classifier(args.model)
    with np.load(VAL_FACES) as archive:
        faces = archive["images"][:32]
    print(f"machine: {cv2.getNumberOfCPUs()} CPUs; model {args.model.name}")

    single = median_ms(lambda: classifier.predict_proba(faces[:1]), args.repeats * 4)
    batch = median_ms(lambda: classifier.predict_proba(faces), args.repeats)
    print(f"predict_proba N=1:  {single:.2f} ms per face")
    print(f"predict_proba N=32: {batch / 32:.3f} ms per face ({batch:.1f} ms per batch)")

    frames = clip_frames()
    frame_rgb = cv2.cvtColor(frames[len(frames) // 2], cv2.COLOR_BGR2RGB)
    found = len(emotion.analyze_image(frame_rgb, classifier))
    frame_ms = median_ms(lambda: emotion.analyze_image(frame_rgb, classifier), args.repeats)
    print(f"analyze_image 640x480 ({found} face): {frame_ms:.2f} ms median")

    photo = cv2.resize(frame_rgb, (4000, 3000), interpolation=cv2.INTER_LINEAR)  # 12 MP
    found = len(emotion.analyze_image(photo, classifier))
    photo_ms = median_ms(lambda: emotion.analyze_image(photo, classifier), max(5, args.repeats // 5))
    print(f"analyze_image 4000x3000 ({found} face): {photo_ms:.1f} ms median")

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

    clip = FACE_CLIP.read_bytes()
    for every in (1, LiveSettings().detect_every):
        started = time.perf_counter()
        result = process_video(clip, classifier, every=every)
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


if __name__ == "__main__":
    main()
