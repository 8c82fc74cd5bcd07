"""The on-device webcam's JavaScript against the engine: the same grey frames through the
browser's modules (in headless Chromium, with LiteRT.js and the files the app serves) and
through emotion.faces, the classifier and emotion.tracking give the same faces.

Measured here (Debian's Chromium, LiteRT.js 2.5.3, the bundled model): on six stills
(eleven faces: upright, turned by 30 and -20 degrees, a group photo, a face filling the
picture) boxes within 1 px of the engine's, angles within 0.3 degrees and probabilities within
0.001; along 24 tracked frames of the face
clip at 640x480, the same ids, boxes within 0 px and smoothed probabilities within 0.001. The
browser follows OpenCV's own rounding (whole-block averages, warpAffine's fixed point); the
tolerances below leave room for another CPU's float rounding.
Needs Debian's chromium and Playwright, as tests/test_browser.py.
"""

from __future__ import annotations

import base64
import functools
import http.server
import threading

import cv2
import numpy as np
import pytest

from emotion.faces import LIVE_DETECTOR, crop_faces, detect_faces
from emotion.live import LiveSettings
from emotion.model_file import read_runtime
from emotion.tracking import FaceTracker
from scripts import samples
from scripts.browser import CHROMIUM, CHROMIUM_ARGS
from ui import device_webcam
from ui.device_webcam import DeviceAssets

BOX_TOLERANCE_PX = 3
ANGLE_TOLERANCE_DEG = 1.0
PROBABILITY_TOLERANCE = 0.02
CLIP_FRAMES = 24  # tracked: detections on frames 0, 10 and 20, template matching between
CAMERA_SIZE = (640, 480)

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("browser_available")]


@pytest.fixture(scope="module")
def assets(classifier, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(device_webcam.components, "declare_component", lambda name, path: None)
        runtime = read_runtime(classifier.source, classifier.metadata)
        yield DeviceAssets(runtime, tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def page(assets):
    """A page of the served folder in headless Chromium, its modules imported as `window.lens`,
    LiteRT.js and both models loaded; BlazeFace's shapes made by the server as the page asks."""
    from playwright.sync_api import sync_playwright

    handler = functools.partial(QuietHandler, directory=str(assets.folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.expose_function("blazefaceFile", lambda height, width: shaped(assets, height, width))
            page.goto(f"http://127.0.0.1:{server.server_port}/index.html")
            page.evaluate(LOAD, assets.files())
            yield page
            browser.close()
    finally:
        server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def shaped(assets: DeviceAssets, height: int, width: int) -> dict:
    assert assets.blazeface(height, width)
    return assets.files()["blazeface"][f"{height}x{width}"]


LOAD = """async (files) => {
  const lens = await import("./device_webcam.js");
  await lens.loadRuntime(new URL("./", location.href).href);
  const classifier = new lens.EmotionClassifier(await lens.loadModel(files.emotion));
  const shaped = async (height, width) => lens.loadModel(await window.blazefaceFile(height, width));
  const blazeface = new lens.BlazeFace(shaped);
  window.lens = { ...lens, classifier, blazeface };
}"""

# Grey frames in, the browser's detections, crops' probabilities and tracked faces out.
ANALYSE = """async ({frames, settings, track}) => {
  const { common, faces, tracking, classifier, blazeface } = window.lens;
  const grey = frames.map(({ data, width, height }) =>
    common.picture(width, height, Uint8Array.from(atob(data), (c) => c.charCodeAt(0))));
  if (track) {
    const detector = (picture) => faces.detectFaces(blazeface, picture, settings.detector);
    const tracker = new tracking.FaceTracker(classifier, settings, detector);
    const out = [];
    for (const picture of grey) {
      const tracked = await tracker.update(picture);
      out.push(tracked.map((face) => ({ id: face.id, box: face.box, p: Array.from(face.probabilities) })));
    }
    return out;
  }
  const out = [];
  for (const picture of grey) {
    const found = await faces.detectFaces(blazeface, picture, settings.detector);
    const crops = common.cropFaces(picture, found);
    const probabilities = await classifier.predictProba(crops);
    out.push(found.map((d, i) => ({ box: d.box, angle: d.angle, p: Array.from(probabilities[i]) })));
  }
  return out;
}"""


def browser_frames(grays: list[np.ndarray]) -> list[dict]:
    return [
        {"data": base64.b64encode(gray.tobytes()).decode(), "width": gray.shape[1], "height": gray.shape[0]}
        for gray in grays
    ]


def stills() -> list[np.ndarray]:
    from skimage import data

    pictures = [data.astronaut(), samples.turned_astronaut(30), samples.turned_astronaut(-20)]
    pictures += [samples.group_photo(0)]
    grays = [cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) for rgb in pictures]
    # Her face filling the picture, cut at its right: the first look finds none, the close-up finds it.
    x, y, _ = samples.ASTRONAUT_FACE
    face = grays[0][y - 50 : y + 50, x - 25 : x + 75]
    close_up = cv2.resize(face, (480, 480), interpolation=cv2.INTER_CUBIC)
    return [*grays, cv2.resize(grays[0], CAMERA_SIZE, interpolation=cv2.INTER_AREA), close_up]


def clip() -> list[np.ndarray]:
    frames = []
    for index, rgb in enumerate(samples.clip_frames()):
        if index == CLIP_FRAMES:
            break
        camera = cv2.resize(rgb, CAMERA_SIZE, interpolation=cv2.INTER_AREA)  # as a 640x480 webcam
        frames.append(cv2.cvtColor(camera, cv2.COLOR_RGB2GRAY))
    return frames


def worst(pairs) -> float:
    return max((float(np.max(np.abs(np.subtract(a, b)))) for a, b in pairs), default=0.0)


def test_stills_give_the_engines_faces_and_probabilities(page, classifier):
    settings = device_webcam.browser_settings(LiveSettings())
    grays = stills()
    browser = page.evaluate(ANALYSE, {"frames": browser_frames(grays), "settings": settings, "track": False})
    boxes, angles, probabilities = [], [], []
    for gray, theirs in zip(grays, browser, strict=True):
        ours = detect_faces(gray, LIVE_DETECTOR)
        assert len(theirs) == len(ours), (gray.shape, theirs, ours)
        ours_probabilities = classifier.predict_proba(crop_faces(gray, ours)) if ours else []
        for detection, face, row in zip(ours, theirs, ours_probabilities, strict=True):
            boxes.append((detection.box, face["box"]))
            angles.append((detection.angle, face["angle"]))
            probabilities.append((row, face["p"]))
    print(
        f"stills: {len(boxes)} faces; boxes within {worst(boxes):.0f} px, angles within "
        f"{worst(angles):.2f} deg, probabilities within {worst(probabilities):.4f}"
    )
    assert len(boxes) >= len(grays)
    assert worst(boxes) <= BOX_TOLERANCE_PX
    assert worst(angles) <= ANGLE_TOLERANCE_DEG
    assert worst(probabilities) <= PROBABILITY_TOLERANCE


def test_a_tracked_clip_gives_the_engines_ids_boxes_and_smoothed_probabilities(page, classifier):
    live = LiveSettings(classify_every=2)  # as the webcam reads faces
    grays = clip()
    browser = page.evaluate(
        ANALYSE,
        {"frames": browser_frames(grays), "settings": device_webcam.browser_settings(live), "track": True},
    )
    tracker = FaceTracker(classifier, live)
    boxes, probabilities = [], []
    for gray, theirs in zip(grays, browser, strict=True):
        ours = tracker.update(gray)
        assert [face.id for face in ours] == [face["id"] for face in theirs]
        for face, other in zip(ours, theirs, strict=True):
            boxes.append((face.box, other["box"]))
            probabilities.append((face.probabilities, other["p"]))
    print(
        f"clip: {len(boxes)} tracked faces; boxes within {worst(boxes):.0f} px, "
        f"probabilities within {worst(probabilities):.4f}"
    )
    assert len(boxes) >= CLIP_FRAMES - 1
    assert worst(boxes) <= BOX_TOLERANCE_PX
    assert worst(probabilities) <= PROBABILITY_TOLERANCE


def test_a_camera_frames_luma_becomes_the_grey_picture_the_server_takes_from_webrtc(page):
    from emotion.live import VIDEO_TO_FULL_RANGE

    table = page.evaluate("Array.from(window.lens.live.VIDEO_TO_FULL_RANGE)")
    assert table == VIDEO_TO_FULL_RANGE.tolist()
