"""Find faces and cut them out the way FER2013 framed its faces.

detect -> square/clip -> crop: `detect_faces` runs the face finder that the settings name and
returns `Detection`s (a square box in the input image's pixels, and the angle of the eye line),
largest first; `crop_faces` turns them into the (N, 48, 48) grayscale crops the emotion model
takes, turned upright by that angle. Each finder is one module with a `find(gray, settings)`
function (FINDERS): "blazeface" (MediaPipe's BlazeFace, emotion.faces.blazeface) and "haar"
(OpenCV's cascade, emotion.faces.haar). How faces are searched for comes in two named presets,
"photo" and "live" (webcam and video), which `detector_settings` makes stricter or more
sensitive, with either finder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType

import numpy as np

from emotion.faces import blazeface, haar
from emotion.faces.common import (
    DEFAULT_FINDER,
    FACE_PADDING,
    FINDER_NAMES,
    FINDER_SUMMARIES,
    Box,
    Detection,
    DetectorSettings,
    crop_faces,
    square_box,
    to_gray,
)

__all__ = [
    "DEFAULT_FINDER",
    "DETECTOR_PRESETS",
    "FACE_PADDING",
    "FINDERS",
    "FINDER_NAMES",
    "FINDER_SUMMARIES",
    "LIVE_DETECTOR",
    "PHOTO_DETECTOR",
    "SENSITIVITIES",
    "Box",
    "Detection",
    "DetectorSettings",
    "crop_faces",
    "detect_faces",
    "detector_settings",
    "square_box",
    "to_gray",
]

FaceFinder = Callable[[np.ndarray, DetectorSettings], list[Detection]]  # (gray (H, W) uint8, settings)
FINDERS: Mapping[str, FaceFinder] = MappingProxyType({"blazeface": blazeface.find, "haar": haar.find})
MIN_IMAGE_SIDE = 8  # pixels; no face is sought in a smaller image

# The named presets. Photos: faces from a twentieth of the shorter side, as in a group photo.
PHOTO_DETECTOR = DetectorSettings()
# Webcam frames and videos: a webcam user sits within a metre or two, so faces are large;
# searching only for faces of at least 12 % of the frame's shorter side (and never under
# min_face_pixels) keeps the full-frame search of a 720p or 1080p frame as fast as a 480p one's.
LIVE_DETECTOR = DetectorSettings(min_size_fraction=0.12)
DETECTOR_PRESETS: Mapping[str, DetectorSettings] = MappingProxyType(
    {"photo": PHOTO_DETECTOR, "live": LIVE_DETECTOR}
)
# How eagerly a finder reports a face: fewer neighbours and a finer scale step (Haar) or a lower
# score (BlazeFace) find more faces (small, turned, dim) and more false ones. "balanced" is each
# preset as it is.
SENSITIVITIES: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "strict": {"scale_factor": 1.2, "min_neighbors": 5, "min_score": 0.7},
        "balanced": {},
        "sensitive": {"scale_factor": 1.05, "min_neighbors": 2, "min_score": 0.35},
    }
)


def detector_settings(
    preset: str = "photo",
    sensitivity: str = "balanced",
    min_size_fraction: float | None = None,
    finder: str = DEFAULT_FINDER,
) -> DetectorSettings:
    """A named preset ("photo" or "live") at a sensitivity, looking for faces of at least
    `min_size_fraction` of the shorter side (None: the preset's own minimum) with `finder`
    (one of FINDER_NAMES).

    The live preset never looks for faces smaller than its own minimum: in a stream they would
    cost more time than the frame rate allows.
    """
    if preset not in DETECTOR_PRESETS:
        raise ValueError(f"Unknown detector preset {preset!r}; choose one of {sorted(DETECTOR_PRESETS)}")
    if sensitivity not in SENSITIVITIES:
        raise ValueError(f"Unknown sensitivity {sensitivity!r}; choose one of {list(SENSITIVITIES)}")
    settings = DETECTOR_PRESETS[preset]
    if min_size_fraction is not None:
        if preset == "live":
            min_size_fraction = max(min_size_fraction, settings.min_size_fraction)
        settings = replace(settings, min_size_fraction=min_size_fraction)
    return replace(settings, finder=finder, **SENSITIVITIES[sensitivity])


def detect_faces(image: np.ndarray, settings: DetectorSettings = PHOTO_DETECTOR) -> list[Detection]:
    """The faces in an RGB (H, W, 3) or grayscale (H, W) uint8 image, largest first, found by
    settings.finder. Boxes are in the input's pixels, square, framed as FER2013 frames its faces
    and inside the image."""
    gray = to_gray(image)
    if min(gray.shape) < MIN_IMAGE_SIDE:
        return []
    detections = FINDERS[settings.finder](gray, settings)
    return sorted(detections, key=lambda detection: (-detection.box.area, detection.box.y, detection.box.x))
