"""The on-device webcam's server side: the folder it is served from, and the browser's messages
taken into a session (the browser's own modules are tested in tests/test_browser_parity.py)."""

import hashlib

import pytest

from emotion.events import EventSource
from emotion.live import LiveSettings
from emotion.model_file import read_runtime
from emotion.session import SessionStats
from ui import device_webcam
from ui.device_webcam import DeviceAssets, DeviceSession, take

HAPPY = [0.01, 0.01, 0.01, 0.9, 0.02, 0.02, 0.03]


@pytest.fixture(scope="module")
def assets(classifier, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(device_webcam.components, "declare_component", lambda name, path: (name, path))
        runtime = read_runtime(classifier.source, classifier.metadata)
        return DeviceAssets(runtime, tmp_path_factory.mktemp("served"))


def test_the_folder_holds_the_bundle_and_the_model_files_named_by_their_checksums(assets):
    files = assets.files()
    assert assets.component == ("device_webcam", str(assets.folder))
    for name in (
        "index.html",
        "device_webcam.js",
        "litert_wasm_internal.wasm",
        "litert_wasm_compat_internal.wasm",
    ):
        assert (assets.folder / name).is_file()
    for file in (files["emotion"], files["blazeface"]["128x128"]):
        content = (assets.folder / file["url"].removeprefix("./")).read_bytes()
        assert hashlib.sha256(content).hexdigest() == file["sha256"]
        assert file["sha256"][:16] in file["url"]


def test_blazeface_is_made_only_for_shapes_the_pipeline_can_need(assets):
    assert assets.blazeface(192, 240)
    assert "192x240" in assets.files()["blazeface"]
    assert not assets.blazeface(200, 240)  # not a multiple of 16
    assert not assets.blazeface(64, 128)  # under the model's own size
    assert not assets.blazeface(4096, 4096)


def source(name: str) -> EventSource:
    return EventSource("webcam", name, "app", "general", "0" * 64)


def message(batch: int, status: str = "playing", session: str = "abc", frames=None, **extra) -> dict:
    frames = (
        [{"t": 0.1 * batch, "w": 640, "h": 480, "ms": 8.0, "stages": {"detect": 5.0}, "faces": []}]
        if frames is None
        else frames
    )
    return {"session": session, "batch": batch, "status": status, "frames": frames, **extra}


def test_messages_start_feed_and_stop_a_session_once_each(assets):
    state = DeviceSession(SessionStats(), LiveSettings())
    assert not take(state, {"session": None, "batch": 1, "status": "ready", "frames": []}, assets, source)
    assert not take(state, message(2), assets, source)  # START
    assert state.playing and state.sessions == 1 and state.recorder.source.name.startswith("webcam ")
    face = {"id": 1, "box": [10, 10, 100, 100], "p": HAPPY}
    assert not take(state, message(3, frames=[{**message(3)["frames"][0], "faces": [face]}]), assets, source)
    assert not take(state, message(3), assets, source)  # the same value again, as each rerun returns it
    assert state.stats.snapshot().frames == 2 and state.stats.snapshot().dominant_emotion == "happy"
    assert state.stage_means() == {"detect": 5.0}
    assert not take(state, message(4, frames=[{"t": "soon"}]), assets, source)  # refused, and no exception
    assert state.stats.snapshot().frames == 2
    assert take(state, message(5, status="stopped"), assets, source)  # STOP: the session ends
    assert not state.playing and state.stats.snapshot().frames == 3


def test_a_camera_refused_is_a_problem_to_show_not_a_session(assets):
    state = DeviceSession(SessionStats(), LiveSettings())
    take(
        state,
        message(1, status="camera-error", session=None, frames=[], error="The camera was refused"),
        assets,
        source,
    )
    assert not state.playing and state.problem == "The camera was refused" and state.sessions == 0


def test_the_browser_gets_the_sidebars_live_settings():
    settings = device_webcam.browser_settings(LiveSettings(smoothing=0.3, detect_every=5))
    assert settings["smoothing"] == 0.3 and settings["detectEvery"] == 5
    assert settings["detector"]["minSizeFraction"] == LiveSettings().detector.min_size_fraction


class FakeLog:
    def __init__(self):
        self.frames = []

    def submit(self, source, frames):
        self.frames.extend(frames)


def test_with_the_log_on_each_frame_with_faces_goes_to_the_detection_log(assets):
    state = DeviceSession(SessionStats(), LiveSettings())
    state.recorder.log = FakeLog()
    take(state, message(1), assets, source)  # START, no face
    face = {"id": 2, "box": [10, 10, 100, 100], "p": HAPPY}
    take(state, message(2, frames=[{**message(2)["frames"][0], "faces": [face]}] * 3), assets, source)
    logged = state.recorder.log.frames
    assert [frame.frame for frame in logged] == [1, 2, 3]
    assert logged[0].faces[0].id == 2 and (logged[0].width, logged[0].height) == (640, 480)


def test_the_page_opens_the_webcam_on_this_device_by_default(monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPO

    monkeypatch.setenv("WEBCAM_MODE", "device")
    page = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    page.session_state["tab"] = "Webcam"
    page.run()
    assert not page.exception, page.exception
    assert page.radio(key="webcam_mode").value == "device"
    assert not page.error
