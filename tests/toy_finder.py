"""A toy face finder, declared as a finder's module declares one: it "finds" one face, the
centred square of a share of the picture's shorter side. tests/test_finder_plugins.py registers
it and finds it offered everywhere a finder is chosen."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from emotion.faces import Detection, DetectorSettings, FaceFinder, square_box

NAME = "toy"


@dataclass(frozen=True)
class ToySettings:
    share: float = 0.5  # the face's side, as a share of the picture's shorter side

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise ValueError(f"share must be above 0 and at most 1, got {self.share}")


def find(gray: np.ndarray, settings: DetectorSettings) -> list[Detection]:
    height, width = gray.shape
    side = settings.tuning(NAME).share * min(height, width)
    if side < settings.min_face(height, width):
        return []
    return [Detection(square_box((width - side) / 2, (height - side) / 2, side, side, width, height, 0.0))]


FINDER = FaceFinder(
    name=NAME,
    summary="Toy: the middle of the picture",
    help="The toy finder takes the middle of every picture for a face.",
    find=find,
    settings=ToySettings,
    sensitivities=MappingProxyType({"strict": {"share": 0.4}, "sensitive": {"share": 0.6}}),
)
