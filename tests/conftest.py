"""Fixtures shared by the test modules: the real data in ../shared and the bundled model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pylibsrtp  # noqa: F401  (see below)
import pytest

# pylibsrtp (aiortc's SRTP, imported by streamlit_webrtc) segfaults in srtp_init when it is first
# imported after TensorFlow. app.py imports streamlit_webrtc before any model is loaded; the test
# run loads TensorFlow early, so import it here, before any test can.

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
FER2013 = SHARED_DATA / "fer2013"
FACE_CLIP = SHARED_DATA / "video" / "face_clip.avi"


@pytest.fixture(scope="session")
def classifier():
    """The bundled model, loaded once for the whole test run."""
    from emotion import load_classifier

    return load_classifier(REPO / "model" / "emotion_cnn.keras")


@pytest.fixture(scope="session")
def val_faces() -> tuple[np.ndarray, np.ndarray]:
    """The first 256 FER2013 val faces, (256, 48, 48) uint8, and their labels."""
    with np.load(FER2013 / "val.npz") as archive:
        return archive["images"][:256], archive["labels"][:256].astype("int64")


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
    center_x, center_y = 223, 113  # astronaut's face centre
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
