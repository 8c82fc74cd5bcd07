"""The analysis request every entry point builds from its own input."""

from __future__ import annotations

import pytest

from emotion.faces import detector_settings
from emotion.live import LiveSettings
from emotion.request import AnalysisRequest


def test_the_defaults_are_the_engines_own():
    request = AnalysisRequest()
    assert request == AnalysisRequest.of()
    assert request.detector == detector_settings("photo") and request.finder == "blazeface"
    assert request.live_settings() == LiveSettings()


def test_the_names_become_the_photo_and_live_settings():
    request = AnalysisRequest.of(
        "haar", "strict", 0.02, smoothing=0.3, detect_every=2, engagement_preset="classroom"
    )
    assert request.detector == detector_settings("photo", "strict", 0.02, "haar")
    assert request.live_settings() == LiveSettings(
        detector=detector_settings("live", "strict", 0.02, "haar"),
        detect_every=2,
        smoothing=0.3,
        engagement_preset="classroom",
    )


def test_its_events_name_who_asked_and_the_preset():
    source = AnalysisRequest(engagement_preset="classroom", origin="batch").source(
        "video", "a.mp4", "ab" * 32
    )
    assert (source.kind, source.name, source.origin, source.preset) == (
        "video",
        "a.mp4",
        "batch",
        "classroom",
    )
    with pytest.raises(ValueError, match="Unknown origin"):
        AnalysisRequest(origin="cli")
    with pytest.raises(ValueError, match="preset"):
        AnalysisRequest(engagement_preset="party")
    with pytest.raises(ValueError, match="Unknown face finder"):
        AnalysisRequest.of("dlib")
