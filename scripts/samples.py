"""Faces and a clip made in code, and where the optional FER2013 data lives: for the tests and
the benchmarks alike.

Faces come from skimage.data.astronaut() (Eileen Collins, a NASA photo in the public domain),
which scikit-image ships: 48x48 crops of her face, and a moving clip made from the photo with
PyAV; and from skimage.data.lfw_subset() (faces of many people from Labeled Faces in the Wild):
a group photo. Used by tests/conftest.py and the benchmark scripts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data

REPO = Path(__file__).resolve().parent.parent
DEFAULT_EMOTION_DATA = REPO.parent / "shared" / "data"

ASTRONAUT_FACE = (223, 113, 109)  # centre (x, y) and side of her face in astronaut(), in pixels

# The clip's format, the same as a short phone or webcam recording.
CLIP_SIZE = (720, 480)  # (width, height)
CLIP_FPS = 30
CLIP_FRAMES = 71  # 2.4 s
CLIP_HEAD = 340  # photo pixels: the square around her head and shoulders that the clip shows


def emotion_data_dir() -> Path:
    """The folder holding FER2013's `fer2013/` and FER+'s `ferplus/` archives: $EMOTION_DATA,
    else `../shared/data` beside the repository. Checks that need it skip where it is missing."""
    return Path(os.environ.get("EMOTION_DATA", DEFAULT_EMOTION_DATA))


def face_crops(count: int, seed: int = 0) -> np.ndarray:
    """(count, 48, 48) uint8 grayscale crops of astronaut's face, framed like FER2013's faces.

    Each is cut with another margin (0.95-1.25x the face) and offset (up to 6 % of it), every
    other one mirrored, and contrast and brightness varied, so that no two are alike.
    """
    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    center_x, center_y, face_side = ASTRONAUT_FACE
    rng = np.random.default_rng(seed)
    crops = np.empty((count, 48, 48), dtype=np.uint8)
    for index in range(count):
        side = round(face_side * rng.uniform(0.95, 1.25))
        left = round(center_x - side / 2 + rng.uniform(-0.06, 0.06) * side)
        top = round(center_y - side / 2 + rng.uniform(-0.06, 0.06) * side)
        face = cv2.resize(gray[top : top + side, left : left + side], (48, 48), interpolation=cv2.INTER_AREA)
        if index % 2:
            face = face[:, ::-1]
        face = (face.astype(np.float32) - 128) * rng.uniform(0.7, 1.2) + 128 + rng.uniform(-40, 40)
        crops[index] = np.clip(face, 0, 255).astype(np.uint8)
    return crops


def turned_astronaut(angle: float) -> np.ndarray:
    """astronaut() turned by `angle` degrees (counterclockwise on screen) about her face's centre,
    the corners filled by repeating the edge: (512, 512, 3) uint8 RGB."""
    rgb = data.astronaut()
    turn = cv2.getRotationMatrix2D(ASTRONAUT_FACE[:2], angle, 1.0)
    return cv2.warpAffine(rgb, turn, rgb.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)


def group_photo(first: int, rows: int = 2, columns: int = 3) -> np.ndarray:
    """rows x columns people's faces from lfw_subset(), from face `first` on, each scaled up
    from 25x25 to 120x120 on a pale wall with room around it: (rows*160, columns*160, 3) uint8
    RGB. Faces of different people, with different expressions, in every part of the picture."""
    tile, face_side = 160, 120
    faces = (data.lfw_subset()[first : first + rows * columns] * 255).round().astype(np.uint8)  # (N, 25, 25)
    photo = np.full((rows * tile, columns * tile), 226, dtype=np.uint8)
    margin = (tile - face_side) // 2
    for index, face in enumerate(faces):
        row, column = divmod(index, columns)
        top, left = row * tile + margin, column * tile + margin
        photo[top : top + face_side, left : left + face_side] = cv2.resize(
            face, (face_side, face_side), interpolation=cv2.INTER_CUBIC
        )
    return cv2.cvtColor(photo, cv2.COLOR_GRAY2RGB)


def clip_frames() -> Iterator[np.ndarray]:
    """The face clip's frames, (480, 720, 3) uint8 RGB: astronaut's head and shoulders on a pale
    wall, gliding from left to right and bobbing while she comes a little closer (her face grows
    from 109 to 125 pixels)."""
    width, height = CLIP_SIZE
    center_x, center_y, _ = ASTRONAUT_FACE
    head = data.astronaut()[
        max(0, center_y - CLIP_HEAD // 2) : center_y + CLIP_HEAD // 2,
        center_x - CLIP_HEAD // 2 : center_x + CLIP_HEAD // 2,
    ]  # (283, 340, 3): the photo's top edge cuts the square
    for index in range(CLIP_FRAMES):
        progress = index / (CLIP_FRAMES - 1)
        scale = 1.0 + 0.15 * progress
        moved = cv2.resize(head, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        frame = np.full((height, width, 3), (226, 222, 214), dtype=np.uint8)
        left = round(40 + (width - moved.shape[1] - 80) * progress)
        top = round((height - moved.shape[0]) / 2 + 12 * np.sin(2 * np.pi * progress))
        frame[top : top + moved.shape[0], left : left + moved.shape[1]] = moved
        yield frame


def write_face_clip(path: Path) -> Path:
    """The face clip as a Motion-JPEG AVI (as cameras record): CLIP_FRAMES frames at CLIP_FPS."""
    width, height = CLIP_SIZE
    with av.open(str(path), "w", format="avi") as output:
        stream = output.add_stream("mjpeg", rate=CLIP_FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        stream.options = {"qscale": "3"}
        for rgb in clip_frames():
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path
