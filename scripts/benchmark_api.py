"""Speed of the HTTP API against the engine called in-process: prints figures, asserts nothing.

    python scripts/benchmark_api.py [--requests 20] [--rounds 20] [--concurrency 1 4 8]

The photos: the face clip's frames at 640x480, as JPEGs (the recorded clip in $EMOTION_DATA, or
without it the tests' clip made from skimage's astronaut; see scripts/benchmark.py).
In-process: the engine function the API calls for each photo (emotion.pipeline.photo_json), on
the photo's bytes, from 1, 4 or 8 threads. Over HTTP: `python -m emotion serve` in its own
process on a free port of 127.0.0.1 and 1, 4 or 8 client threads, each with its own keep-alive
connection, each request one photo to POST /v1/photos. The two alternate in short rounds, so a
load that comes and goes on the machine falls on both alike. Figures per concurrency: photos a
second, p50 and p95 latency; then the API's overhead at concurrency 1: its median latency over
the engine's, minus one.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import queue
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from benchmark import benchmark_clip, clip_frames  # scripts/benchmark.py
from browser import SERVER_START_TIMEOUT_S, free_port, healthy  # scripts/browser.py
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def jpeg_photos() -> list[bytes]:
    """Every frame of the face clip at 640x480, as a JPEG (quality 90)."""
    with tempfile.TemporaryDirectory() as folder:
        frames = clip_frames(benchmark_clip(Path(folder)), (640, 480))
    photos = []
    for bgr in frames:
        buffer = io.BytesIO()
        Image.fromarray(bgr[:, :, ::-1]).save(buffer, format="JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos


def start_server(port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "emotion", "serve", "--port", str(port)],
        cwd=REPO,
        env={**os.environ, "API_KEYS": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if healthy(f"http://127.0.0.1:{port}/healthz"):
            return server
        time.sleep(0.2)
    server.kill()
    raise SystemExit(f"the API did not start on port {port} within {SERVER_START_TIMEOUT_S} s")


class Client:
    """One keep-alive connection; `post(photo)` sends it to /v1/photos as a multipart file."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.boundary = uuid.uuid4().hex

    def post(self, photo: bytes) -> None:
        body = (
            (
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="files"; filename="frame.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + photo
            + f"\r\n--{self.boundary}--\r\n".encode()
        )
        headers = {"Content-Type": f"multipart/form-data; boundary={self.boundary}"}
        self.connection.request("POST", "/v1/photos", body, headers)
        response = self.connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise SystemExit(f"the API answered {response.status}: {answer[:200]!r}")


def run(
    callers: list[Callable[[bytes], object]], photos: list[bytes], requests: int
) -> tuple[float, list[float]]:
    """`requests` photos, as many at a time as there are callers, each caller used by one at a time.

    Returns (seconds in all, latency of each request in seconds).
    """
    free: queue.Queue = queue.Queue()
    for caller in callers:
        free.put(caller)

    def one(index: int) -> float:
        caller = free.get()
        try:
            started = time.perf_counter()
            caller(photos[index % len(photos)])
            return time.perf_counter() - started
        finally:
            free.put(caller)

    with ThreadPoolExecutor(len(callers)) as pool:
        started = time.perf_counter()
        latencies = list(pool.map(one, range(requests)))
        return time.perf_counter() - started, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20, help="photos per round")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=20, help="alternations of in-process and HTTP")
    args = parser.parse_args()

    from emotion.pipeline import photo_json
    from emotion.remote import resolve_model
    from emotion.settings import read_secrets_file

    photos = jpeg_photos()
    model = resolve_model(read_secrets_file())  # the model the API loads
    port = free_port()
    server = start_server(port)
    load_before = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs; {len(photos)} photos 640x480 JPEG; model {model.path.name}")
    print(f"{'concurrency':>11}  {'where':<10}  {'photos/s':>8}  {'p50 ms':>7}  {'p95 ms':>7}")
    medians = {}
    try:
        for concurrency in args.concurrency:
            callers = {
                "in-process": [lambda photo: photo_json("frame.jpg", photo, model.classifier)] * concurrency,
                "HTTP API": [Client(port).post for _ in range(concurrency)],
            }
            timings: dict[str, tuple[float, list[float]]] = {where: (0.0, []) for where in callers}
            for where in callers:  # warm-up: connections, buffers
                run(callers[where], photos, concurrency)
            for _ in range(args.rounds):
                for where in callers:
                    seconds, latencies = run(callers[where], photos, args.requests)
                    total, kept = timings[where]
                    timings[where] = (total + seconds, kept + latencies)
            for where, (seconds, latencies) in timings.items():
                p50, p95 = 1000 * np.percentile(latencies, [50, 95])
                medians[concurrency, where] = p50
                print(
                    f"{concurrency:>11}  {where:<10}  {len(latencies) / seconds:8.1f}  {p50:7.2f}  {p95:7.2f}"
                )
    finally:
        server.terminate()
        server.wait()
    if 1 in args.concurrency:
        overhead = medians[1, "HTTP API"] / medians[1, "in-process"] - 1
        print(
            f"API overhead at concurrency 1: {100 * overhead:+.1f} % (median latency, HTTP over in-process)"
        )
    print(f"load average (1 min) before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
