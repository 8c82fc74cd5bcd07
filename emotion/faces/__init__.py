"""Find faces and cut them out the way FER2013 framed its faces.

detect -> square/clip -> crop: `detect_faces` runs the face finder that the settings name and
returns `Detection`s (a square box in the input image's pixels, and the angle of the eye line),
largest first; `crop_faces` turns them into the (N, 48, 48) grayscale crops the emotion model
takes, turned upright by that angle. Each finder is one module that declares its `FaceFinder`
(its name, summary, help, `find(gray, settings)`, own settings and sensitivities), registered
below, one line each: "blazeface" (MediaPipe's BlazeFace, emotion.faces.blazeface) and "haar"
(OpenCV's cascade, emotion.faces.haar); FINDERS offers every one registered to the page, the
command line, the HTTP API and batch. How faces are searched for comes in two named presets,
"photo" and "live" (webcam and video), which `detector_settings` makes stricter or more
sensitive, with any finder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

import numpy as np

from emotion.faces import blazeface, haar
from emotion.faces.common import (
    DEFAULT_FINDER,
    FACE_PADDING,
    FINDERS,
    SENSITIVITIES,
    Box,
    Detection,
    DetectorSettings,
    FaceFinder,
    crop_faces,
    register_finder,
    square_box,
    to_gray,
    unregister_finder,
)

__all__ = [
    "DEFAULT_FINDER",
    "DETECTOR_PRESETS",
    "FACE_PADDING",
    "FINDERS",
    "FINDER_NAMES",
    "LIVE_DETECTOR",
    "PHOTO_DETECTOR",
    "SENSITIVITIES",
    "Box",
    "Detection",
    "DetectorSettings",
    "FaceFinder",
    "crop_faces",
    "detect_faces",
    "detector_settings",
    "register_finder",
    "square_box",
    "to_gray",
    "unregister_finder",
]

register_finder(blazeface.FINDER)
register_finder(haar.FINDER)
FINDER_NAMES = tuple(FINDERS)  # the finders shipped; FINDERS also holds any registered since

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


def detector_settings(
    preset: str = "photo",
    sensitivity: str = "balanced",
    min_size_fraction: float | None = None,
    finder: str = DEFAULT_FINDER,
) -> DetectorSettings:
    """A named preset ("photo" or "live") at a sensitivity, looking for faces of at least
    `min_size_fraction` of the shorter side (None: the preset's own minimum) with `finder`
    (one of FINDERS). Every finder's own settings are set at the sensitivity (its
    FaceFinder.sensitivities), so that another finder chosen later keeps it.

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
    tunings = tuple(
        (name, replace(settings.tuning(name), **spec.sensitivities.get(sensitivity, {})))
        for name, spec in FINDERS.items()
    )
    return replace(settings, finder=finder, tunings=tunings)


def detect_faces(image: np.ndarray, settings: DetectorSettings = PHOTO_DETECTOR) -> list[Detection]:
    """The faces in an RGB (H, W, 3) or grayscale (H, W) uint8 image, largest first, found by
    settings.finder. Boxes are in the input's pixels, square, framed as FER2013 frames its faces
    and inside the image."""
    gray = to_gray(image)
    if min(gray.shape) < MIN_IMAGE_SIDE:
        return []
    detections = FINDERS[settings.finder].find(gray, settings)
    return sorted(detections, key=lambda detection: (-detection.box.area, detection.box.y, detection.box.x))
