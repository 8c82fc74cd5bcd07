"""A face finder is one module and one registry line: the toy finder (tests/toy_finder.py),
registered here, is offered by the command line, the HTTP API and the page's sidebar, with its
own settings at each sensitivity, and finds its faces there as the shipped finders find theirs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

import ui.webcam
from emotion.api import ApiSettings, create_app
from emotion.classifier import BUNDLED_MODEL, load_classifier
from emotion.cli import build_parser, predict_command
from emotion.faces import (
    FINDER_NAMES,
    FINDERS,
    DetectorSettings,
    detect_faces,
    detector_settings,
    register_finder,
    unregister_finder,
)
from emotion.image import encode_png
from emotion.remote import LoadedModel
from tests import toy_finder
from tests.conftest import REPO
from tests.test_app import FakeStreamer

PHOTO = encode_png(np.full((240, 320, 3), 128, np.uint8))
TOY_BOX = [100, 60, 120, 120]  # x, y, w, h: the middle half of the shorter side (balanced: share 0.5)


@pytest.fixture
def toy():
    register_finder(toy_finder.FINDER)  # the registry line
    try:
        yield toy_finder.NAME
    finally:
        unregister_finder(toy_finder.NAME)


def test_the_toy_finder_finds_with_its_own_settings_at_each_sensitivity(toy):
    assert list(FINDERS) == [*FINDER_NAMES, toy]
    gray = np.zeros((240, 320), np.uint8)
    (found,) = detect_faces(gray, DetectorSettings(finder=toy))
    assert list(found.box) == TOY_BOX
    assert detector_settings("photo", "strict", finder=toy).share == 0.4
    assert detector_settings("photo", "sensitive", finder=toy).tuning().share == 0.6
    # Another finder's sensitivity holds for it too, and its own settings are checked.
    assert detector_settings("photo", "strict", finder="haar").share == 0.4
    with pytest.raises(ValueError, match="share"):
        DetectorSettings(finder=toy, share=2.0)
    with pytest.raises(ValueError, match="No face finder has the setting"):
        DetectorSettings(finder=toy, shares=0.3)


def test_the_command_line_offers_it_and_prints_its_faces(toy, tmp_path, capsys):
    parser = build_parser()
    predict = parser._subparsers._group_actions[0].choices["predict"]
    assert toy_finder.FINDER.summary in predict.format_help()
    photo = tmp_path / "grey.png"
    photo.write_bytes(PHOTO)

    assert predict_command([photo], BUNDLED_MODEL, as_json=True, detector=toy) == 0

    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["detector"] == toy and [face["box"] for face in record["faces"]] == [TOY_BOX]


def test_the_api_offers_it_and_answers_as_the_command_line(toy, tmp_path, capsys):
    photo = tmp_path / "grey.png"
    photo.write_bytes(PHOTO)
    predict_command([photo], BUNDLED_MODEL, as_json=True, detector=toy)
    printed = json.loads(capsys.readouterr().out)

    model = LoadedModel(load_classifier(BUNDLED_MODEL), "bundled", None)
    with TestClient(create_app(ApiSettings(), model)) as client:
        answer = client.post(
            f"/v1/photos?detector={toy}", files=[("files", (str(photo), PHOTO, "image/png"))]
        )
        schema = client.get("/openapi.json").json()

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"results": [printed]}
    (detector,) = [
        parameter
        for parameter in schema["paths"]["/v1/photos"]["post"]["parameters"]
        if parameter["name"] == "detector"
    ]
    assert (
        toy in detector["schema"]["enum"] and toy_finder.FINDER.summary in detector["schema"]["description"]
    )


def test_the_sidebar_offers_it_and_the_photo_tab_finds_its_faces(toy, monkeypatch):
    monkeypatch.setattr(ui.webcam, "webrtc_streamer", FakeStreamer())
    page = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    finder_box = page.sidebar.selectbox[0]
    assert finder_box.label == "Face finder"
    assert toy_finder.FINDER.summary in finder_box.options
    assert toy_finder.FINDER.help in finder_box.help

    finder_box.set_value(toy).run()
    page.file_uploader(key="photos").set_value([("grey.png", PHOTO, "image/png")])
    page.run()

    assert not page.exception, page.exception
    assert any(element.value.startswith("Largest face") for element in page.markdown)
