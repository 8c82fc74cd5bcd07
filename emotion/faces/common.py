"""What every face finder shares: the box and detection types, the settings, the registry of
finders, and the one crop.

A finder is one module that declares a `FaceFinder` (its name, a summary, its page help, its
`find` function, its own settings and how they change with the sensitivity) and one line in
emotion.faces that registers it (`register_finder`); `FINDERS` holds every finder registered.
`DetectorSettings` carries the settings every finder reads (the smallest face, the largest scan)
and each finder's own, read as its attributes (`settings.min_score`) or whole (`tuning`).

square/clip -> crop: a finder's `Detection` is a square `Box` inside the image plus the angle
its eye line is turned by; `crop_faces` cuts each one out turned back upright (only the
face's neighbourhood is turned, never the whole frame) as the (N, 48, 48) grayscale crops the
emotion model takes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

import cv2
import numpy as np

from emotion.labels import FACE_SIZE

DEFAULT_FINDER = "blazeface"
# How eagerly a finder reports a face, the same names for every finder: each says what its own
# settings are at "strict" and "sensitive" (more faces, small, turned or dim, and more false
# ones); "balanced" is its settings as they are.
SENSITIVITIES = ("strict", "balanced", "sensitive")

# FER2013 faces are tight crops from the brows/forehead to the chin: measured on FER2013's own
# faces, that framing is the Haar box itself, give or take a few percent, and on real photos the
# crop matches the mean FER2013 face best for a box a little larger (model/FACE_FINDERS.md,
# "Framing", has the figures). So the box grows by this fraction of its side on each side.
FACE_PADDING = 0.025
CASCADE_WINDOW = 24  # pixels; the Haar cascade's training window, the smallest face it can see


class Box(NamedTuple):
    """A face's square in image pixels: top-left corner (x, y), width w and height h."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2.0, self.y + self.h / 2.0


class Detection(NamedTuple):
    """A face as a finder sees it: its square, and how far its eyes are turned from level."""

    box: Box  # square, framed as FER2013 frames its faces, inside the image
    # Degrees from the image's x axis to the line from the face's right eye to its left eye
    # (clockwise on screen, the image's y axis pointing down); 0 for an upright face, and always
    # 0 from a finder that does not see the eyes.
    angle: float = 0.0


@dataclass(frozen=True)
class NoSettings:
    """The own settings of a finder that has none."""


@dataclass(frozen=True)
class FaceFinder:
    """One face finder, as its module declares it."""

    name: str  # what the page, the command line and the HTTP API call it
    summary: str  # what it finds, in a few words, for all three
    help: str  # a few sentences for the page: what it finds, and what it costs
    find: Callable[[np.ndarray, DetectorSettings], list[Detection]]  # (gray (H, W) uint8, settings)
    settings: type = NoSettings  # its own settings: a frozen dataclass, every field with a default
    # Its own settings' values at the other sensitivities than "balanced" (see SENSITIVITIES).
    sensitivities: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        unknown = set(self.sensitivities) - set(SENSITIVITIES)
        if unknown:
            raise ValueError(f"{self.name}: unknown sensitivities {sorted(unknown)}; use {SENSITIVITIES}")


_REGISTERED: dict[str, FaceFinder] = {}
FINDERS: Mapping[str, FaceFinder] = MappingProxyType(_REGISTERED)  # every finder registered, by name


def register_finder(finder: FaceFinder) -> FaceFinder:
    """Offer `finder` to every entry point (the page, the command line, the HTTP API, batch)."""
    if finder.name in _REGISTERED:
        raise ValueError(f"A face finder named {finder.name!r} is registered already")
    _REGISTERED[finder.name] = finder
    return finder


def unregister_finder(name: str) -> None:
    """Offer the finder no more; settings that name it stop working."""
    del _REGISTERED[name]


@dataclass(frozen=True, init=False)
class DetectorSettings:
    """How faces are searched for; the defaults balance recall, false alarms and speed.

    finder: which face finder runs, one of FINDERS.
    min_size_fraction: smallest face searched for, as a fraction of the image's shorter
        side (0.05: a face a twentieth of a group photo's height).
    min_face_pixels: and never smaller than this many input pixels: below ~64 px a face has
        little more detail than the model's 48 px input, and the smallest faces cost the most
        time to search for (64 rather than 48 halves the Haar detection time at 640x480).
    max_detection_side: cap on the longer side of the image a finder scans (on a large photo,
        the smallest face found is then about 24 / 640 of its longer side, whatever the minimum).
    Any other keyword is a setting of a finder's own (its FaceFinder.settings: BlazeFace's
    min_score, the Haar cascade's scale_factor, ...), kept for every finder that has it, so that
    a sensitivity chosen for one finder holds when another is chosen; each is read as an
    attribute of the settings.
    """

    finder: str
    min_size_fraction: float
    min_face_pixels: int  # input pixels
    max_detection_side: int  # pixels
    # The finders' own settings that differ from their defaults: (finder name, its settings)
    # pairs in the order the finders were registered.
    tunings: tuple[tuple[str, Any], ...]

    def __init__(
        self,
        finder: str = DEFAULT_FINDER,
        min_size_fraction: float = 0.05,
        min_face_pixels: int = 64,
        max_detection_side: int = 640,
        tunings: tuple[tuple[str, Any], ...] = (),
        **finder_settings: Any,
    ) -> None:
        if finder not in FINDERS:
            raise ValueError(f"Unknown face finder {finder!r}; choose one of {list(FINDERS)}")
        if not 0.0 <= min_size_fraction <= 1.0:
            raise ValueError(f"min_size_fraction must be between 0 and 1, got {min_size_fraction}")
        if min_face_pixels < 1:
            raise ValueError(f"min_face_pixels must be 1 or more, got {min_face_pixels}")
        if max_detection_side < CASCADE_WINDOW:
            raise ValueError(
                f"max_detection_side must be at least {CASCADE_WINDOW} px, got {max_detection_side}"
            )
        given = dict(tunings)
        kept, claimed = [], set()
        for name, spec in FINDERS.items():
            own = {key: value for key, value in finder_settings.items() if key in _field_names(spec.settings)}
            claimed |= own.keys()
            tuning = dataclasses.replace(given.get(name) or spec.settings(), **own)  # checks the values
            if tuning != spec.settings():
                kept.append((name, tuning))
        unclaimed = sorted(set(finder_settings) - claimed)
        if unclaimed:
            raise ValueError(f"No face finder has the setting(s) {', '.join(unclaimed)}")
        for name, value in (
            ("finder", finder),
            ("min_size_fraction", min_size_fraction),
            ("min_face_pixels", min_face_pixels),
            ("max_detection_side", max_detection_side),
            ("tunings", tuple(kept)),
        ):
            object.__setattr__(self, name, value)

    def tuning(self, finder: str | None = None) -> Any:
        """A finder's own settings (None: this one's, settings.finder's)."""
        name = self.finder if finder is None else finder
        return dict(self.tunings).get(name) or FINDERS[name].settings()

    def __getattr__(self, name: str) -> Any:
        """A finder's own setting (`settings.min_score`), from the first finder that has it."""
        if name.startswith("_") or "tunings" not in self.__dict__:  # pickling, copying
            raise AttributeError(name)
        for finder, spec in FINDERS.items():
            if name in _field_names(spec.settings):
                return getattr(self.tuning(finder), name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def min_face(self, height: int, width: int) -> float:
        """The smallest face sought in an image of this size, in its pixels."""
        return max(self.min_size_fraction * min(height, width), self.min_face_pixels)


def _field_names(settings: type) -> frozenset[str]:
    return frozenset(setting.name for setting in dataclasses.fields(settings))


def to_gray(image: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) or grayscale (H, W) uint8 -> grayscale (H, W) uint8."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"image must be RGB (H, W, 3) or grayscale (H, W), got shape {image.shape}")


def block_average(image: np.ndarray, k: int) -> np.ndarray:
    """The image averaged in blocks of k x k pixels (k >= 1), the last width % k columns and
    height % k rows dropped: pixel (u, v) of the result covers the image's pixels from (k u, k v).
    OpenCV does this whole-block averaging fast, and area-resizes by any other ratio many times
    more slowly (the README's webcam rounds give the cost)."""
    height, width = image.shape[:2]
    if k == 1 or height < k or width < k:
        return image[: height // k, : width // k]  # itself, or empty
    height, width = height - height % k, width - width % k
    return cv2.resize(image[:height, :width], (width // k, height // k), interpolation=cv2.INTER_AREA)


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The image averaged down to `size` (width, height), each no larger than the image's: first
    in the largest whole blocks that keep it at least `size` (`block_average`, which drops under
    one block of the far edges), then area-resized by the ratio left, under 2. A little softer
    than one area resize, which takes ten times longer: for the face finders' input, not for the
    crops the classifier reads."""
    height, width = image.shape[:2]
    image = block_average(image, max(1, min(width // size[0], height // size[1])))
    if image.shape[1] == size[0] and image.shape[0] == size[1]:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def square_box(
    x: float, y: float, w: float, h: float, image_width: int, image_height: int, padding: float = FACE_PADDING
) -> Box:
    """The square of side max(w, h) * (1 + 2 * padding) centred on the box, moved (or shrunk)
    to lie inside the image: a clipped square would be stretched when resized to 48x48."""
    side = max(w, h) * (1.0 + 2.0 * padding)
    side = max(1, round(min(side, image_width, image_height)))
    center_x, center_y = x + w / 2.0, y + h / 2.0
    left = round(center_x - side / 2.0)
    top = round(center_y - side / 2.0)
    left = min(max(left, 0), image_width - side)
    top = min(max(top, 0), image_height - side)
    return Box(left, top, side, side)


def turned_square(
    gray: np.ndarray, center: tuple[float, float], side: float, angle: float, size: int
) -> np.ndarray:
    """The square of `side` pixels around `center`, turned by `angle` degrees (see
    Detection.angle), cut out upright at size x size pixels -> uint8 (size, size).

    Only the square's neighbourhood is read: it is first averaged in the largest whole blocks
    that keep it at least the output's scale (so a large face is averaged, not aliased), then
    turned with bilinear interpolation.
    Parts outside the image repeat its edge.
    """
    height, width = gray.shape
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    reach = side / 2.0 * (abs(cos) + abs(sin)) + 2.0  # half the turned square's upright bounds, +2 px
    left, top = max(math.floor(center[0] - reach), 0), max(math.floor(center[1] - reach), 0)
    right = min(math.ceil(center[0] + reach), width)
    bottom = min(math.ceil(center[1] + reach), height)
    if right <= left or bottom <= top:
        raise ValueError(f"the face at {center} lies outside the {width}x{height} image")
    block = max(1, math.floor(side / size))
    region = block_average(gray[top:bottom, left:right], block)
    scale = 1.0 / block
    # Output pixel (u, v) reads the image at center + step * ((u - middle) * eye_axis + (v - middle) *
    # down_axis), eye_axis = (cos, sin) and down_axis = (-sin, cos); then in the region's pixels, whose
    # centres sit at whole coordinates (hence the half pixel).
    step, middle = side / size, (size - 1) / 2.0
    matrix = np.array(
        [
            [step * cos * scale, -step * sin * scale, (center[0] - left) * scale - 0.5],
            [step * sin * scale, step * cos * scale, (center[1] - top) * scale - 0.5],
        ]
    )
    matrix[:, 2] -= matrix[:, :2] @ (middle, middle)
    return cv2.warpAffine(
        region,
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def crop_faces(gray: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """The faces cut out of a grayscale (H, W) uint8 image, eyes level -> uint8 (N, 48, 48).

    An upright face (angle 0) is its box area-resized, as FER2013's faces were made; a turned
    one is its box turned back upright around the box's centre (see `turned_square`).
    """
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"gray must be a grayscale (H, W) uint8 image, got {gray.dtype} {gray.shape}")
    crops = np.empty((len(detections), FACE_SIZE, FACE_SIZE), dtype=np.uint8)
    height, width = gray.shape
    for index, (box, angle) in enumerate(detections):
        x, y, w, h = box
        left, top = max(0, int(x)), max(0, int(y))
        right, bottom = min(width, int(x + w)), min(height, int(y + h))
        if right <= left or bottom <= top:
            raise ValueError(f"box {tuple(box)} lies outside the {width}x{height} image")
        if angle == 0.0:
            crops[index] = cv2.resize(
                gray[top:bottom, left:right], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA
            )
        else:
            crops[index] = turned_square(gray, box.center, max(w, h), angle, FACE_SIZE)
    return crops
