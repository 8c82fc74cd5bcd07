"""What an analysis is asked for: one typed request, built once by each entry point.

The page's sidebar, the command line's options and the HTTP API's query name the same choices
(a face finder, a sensitivity, a minimum face size, how streams are tracked and smoothed, an
engagement preset); each entry point turns its own into one `AnalysisRequest` (`of` takes the
names), and the engine reads from it the detector for photos (the "photo" preset), the live
settings for the webcam and videos (the "live" preset), and the source of the detection
events it makes (`source`, with who asked: the page, batch or the API).
"""

from __future__ import annotations

from dataclasses import dataclass

from emotion.engagement import DEFAULT_PRESET, get_preset
from emotion.events import ORIGINS, EventSource
from emotion.faces import DEFAULT_FINDER, LIVE_DETECTOR, PHOTO_DETECTOR, DetectorSettings, detector_settings
from emotion.live import LiveSettings

_LIVE_DEFAULTS = LiveSettings()


@dataclass(frozen=True)
class AnalysisRequest:
    """How to analyse: the detectors for photos and streams, how streams are tracked, and whose
    events these are. The defaults are the engine's own; `of` builds one from names."""

    detector: DetectorSettings = PHOTO_DETECTOR  # photos
    live_detector: DetectorSettings = LIVE_DETECTOR  # webcam frames and videos
    engagement_preset: str = DEFAULT_PRESET  # a key of emotion.engagement.PRESETS
    smoothing: float = _LIVE_DEFAULTS.smoothing  # of each tracked face's emotion, 0 to under 1
    detect_every: int = _LIVE_DEFAULTS.detect_every  # streams: search whole frames every Nth frame
    origin: str = "app"  # one of emotion.events.ORIGINS: who asks

    def __post_init__(self) -> None:
        if self.origin not in ORIGINS:
            raise ValueError(f"Unknown origin {self.origin!r}; choose one of {list(ORIGINS)}")
        get_preset(self.engagement_preset)  # an unknown preset fails here, not mid-analysis

    @classmethod
    def of(
        cls,
        finder: str = DEFAULT_FINDER,
        sensitivity: str = "balanced",
        min_size_fraction: float | None = None,
        **choices,
    ) -> AnalysisRequest:
        """The request for these names: a face finder (emotion.faces.FINDERS), a sensitivity
        (emotion.faces.SENSITIVITIES) and a minimum face size as a fraction of the picture's
        shorter side (None: each preset's own), with the other fields as keywords."""
        return cls(
            detector=detector_settings("photo", sensitivity, min_size_fraction, finder),
            live_detector=detector_settings("live", sensitivity, min_size_fraction, finder),
            **choices,
        )

    @property
    def finder(self) -> str:
        """The face finder's name, as results and their JSON name it."""
        return self.detector.finder

    def live_settings(self) -> LiveSettings:
        """How the webcam and videos are analysed."""
        return LiveSettings(
            detector=self.live_detector,
            detect_every=self.detect_every,
            smoothing=self.smoothing,
            engagement_preset=self.engagement_preset,
        )

    def source(self, kind: str, name: str, model_sha256: str) -> EventSource:
        """What every detection event of one webcam session, video or photo shares; checked."""
        return EventSource(
            kind=kind, name=name, origin=self.origin, preset=self.engagement_preset, model_sha256=model_sha256
        ).check()
