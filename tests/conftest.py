"""Fixtures shared by the test modules: real faces and a clip made from skimage's astronaut
(scripts/samples.py), the bundled model, and FER2013's val faces where they are present;
run_emotion, which runs `python -m emotion` as a user does; CallsAtOnce, which counts how many
calls of a function run at the same time; and a Clock that tests move by hand."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pylibsrtp  # noqa: F401  (see below)
import pytest

from scripts import samples
from scripts.samples import REPO

# The page's tests (AppTest, and the app served to Chromium) drive the webcam's server mode, which
# they were written for; on this device, the page's default, is tested where a test chooses it
# on the page (tests/test_browser_device.py).
os.environ.setdefault("WEBCAM_MODE", "server")

# pylibsrtp (aiortc's SRTP, imported by streamlit_webrtc) segfaults in srtp_init when it is first
# imported after TensorFlow. app.py imports streamlit_webrtc before any model is loaded; the test
# run loads TensorFlow early, so import it here, before any test can.


@pytest.fixture(scope="session")
def classifier():
    """The bundled model, loaded once for the whole test run."""
    from emotion import load_classifier

    return load_classifier(REPO / "model" / "emotion_cnn.keras")


@pytest.fixture(scope="session")
def face_crops() -> np.ndarray:
    """256 crops of a real face, (256, 48, 48) uint8, each framed, mirrored and lit differently."""
    return samples.face_crops(256)


@pytest.fixture(scope="session")
def face_data_dir(tmp_path_factory) -> Path:
    """A data folder as the trainer reads it: train.npz and val.npz of 320 face crops each,
    labelled with the classes in turn."""
    from emotion.labels import EMOTIONS

    folder = tmp_path_factory.mktemp("data")
    for split, seed in (("train", 1), ("val", 2)):
        labels = (np.arange(320) % len(EMOTIONS)).astype(np.int8)
        np.savez(
            folder / f"{split}.npz",
            images=samples.face_crops(320, seed=seed),
            labels=labels,
            classes=np.array(EMOTIONS),
        )
    return folder


def emotion_data_file(relative: str) -> Path:
    """A file of the FER2013 data under $EMOTION_DATA; the test is skipped where it is missing."""
    path = samples.emotion_data_dir() / relative
    if not path.is_file():
        pytest.skip(f"needs {path} (set EMOTION_DATA to the folder holding {Path(relative).parts[0]}/)")
    return path


@pytest.fixture(scope="session")
def fer2013_val() -> tuple[np.ndarray, np.ndarray]:
    """FER2013's val faces, (3589, 48, 48) uint8, and their labels, from $EMOTION_DATA."""
    with np.load(emotion_data_file("fer2013/val.npz")) as archive:
        return archive["images"], archive["labels"].astype("int64")


@pytest.fixture(scope="session")
def face_clip(tmp_path_factory) -> Path:
    """A 2.4 s, 30 fps, 720x480 Motion-JPEG AVI in which astronaut's face moves about."""
    return samples.write_face_clip(tmp_path_factory.mktemp("clip") / "face_clip.avi")


@pytest.fixture(scope="session")
def astronaut_rgb() -> np.ndarray:
    """A real portrait photo with one frontal face, (512, 512, 3) uint8 RGB."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def group_photo_rgb(astronaut_rgb) -> np.ndarray:
    """12 real frontal faces in a 3x4 grid, (480, 640, 3) uint8 RGB.

    Each tile is astronaut's face cut with a different margin (so faces of 80-120 px),
    every other one mirrored and the brightness varied.
    """
    import cv2

    rows, columns, tile = 3, 4, 160
    center_x, center_y, _ = samples.ASTRONAUT_FACE
    photo = np.full((rows * tile, columns * tile, 3), 235, dtype=np.uint8)
    for index in range(rows * columns):
        half = (150, 170, 190, 210)[index % 4] // 2
        face = astronaut_rgb[center_y - half : center_y + half, center_x - half : center_x + half]
        face = cv2.resize(face, (tile, tile), interpolation=cv2.INTER_AREA)
        if index % 2:
            face = face[:, ::-1]
        face = np.clip(face * (1.0, 0.85, 1.15)[index % 3], 0, 255).astype(np.uint8)
        row, column = divmod(index, columns)
        photo[row * tile : (row + 1) * tile, column * tile : (column + 1) * tile] = face
    return photo


@pytest.fixture(scope="session")
def spark():
    """One SparkSession on local[2] for the whole run: starting Spark takes seconds.

    Without PySpark or Java the Spark tests are skipped, unless REQUIRE_SPARK=1 (as in .ci/run)
    makes that a failure."""
    import importlib.util
    import shutil

    from emotion.batch import spark_session

    missing = []
    if importlib.util.find_spec("pyspark") is None:
        missing.append("PySpark (pip install -r requirements-spark.txt)")
    if shutil.which("java") is None:
        missing.append("Java (apt-get install openjdk-17-jre-headless)")
    if missing:
        reason = "the Spark engine needs " + " and ".join(missing)
        if os.environ.get("REQUIRE_SPARK") == "1":
            pytest.fail(f"REQUIRE_SPARK=1 but {reason}")
        pytest.skip(reason)

    session = spark_session("local[2]")
    yield session
    session.stop()


class Clock:
    """A clock for code that takes one (`clock=time.monotonic`): it stands still until a test
    moves `now`."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_emotion(
    *args: object, cwd: Path = REPO, env: Mapping[str, str] | None = None, timeout_s: float = 600
) -> subprocess.CompletedProcess:
    """`python -m emotion ARGS` in a subprocess, in `cwd`, with this environment (or `env`) and
    this checkout importable; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "emotion", *map(str, args)],
        cwd=cwd,
        env={**(os.environ if env is None else env), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


class CallsAtOnce:
    """Wraps `function` and counts the most calls that ran at once (`most`). Each call first waits
    until `limit + 1` calls are in, at most 5 s, so that a limit of `limit` shows as most == limit."""

    def __init__(self, function, limit: int):
        self.function = function
        self.most = 0
        self._running = 0
        self._lock = threading.Lock()
        self._everyone_in = threading.Barrier(limit + 1, timeout=5)

    def __call__(self, *args, **kwargs):
        with self._lock:
            self._running += 1
            self.most = max(self.most, self._running)
        with contextlib.suppress(threading.BrokenBarrierError):  # then at most `limit` got in
            self._everyone_in.wait()
        try:
            return self.function(*args, **kwargs)
        finally:
            with self._lock:
                self._running -= 1


@pytest.fixture(scope="module")
def browser_available():
    """Skips the module's tests where no browser can be driven; fails them instead where
    REQUIRE_BROWSER=1 (CI)."""
    from scripts.browser import browser_missing_reason

    reason = browser_missing_reason()
    if reason is None:
        return
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


try:
    from playwright.sync_api import Error as PlaywrightError
except ImportError:  # the browser modules' tests are skipped (or fail) by browser_available
    PlaywrightError = Exception


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@contextlib.contextmanager
def served_app(tmp_path_factory, env: Mapping[str, str] | None = None):
    """The app served by `streamlit run` on a free port, with a detection log of its own and
    `env` set; yields its URL and stops it after. Its log's path is printed for a failure."""
    from scripts.browser import serve_app

    folder = tmp_path_factory.mktemp("server")
    log_path = folder / "streamlit.log"
    settings = {"HISTORY_PATH": str(folder / "detections.duckdb"), **(env or {})}
    try:
        with serve_app(log_path, env=settings) as server:
            yield server.url
    finally:
        print(f"server log: {log_path}")
