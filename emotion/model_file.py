"""The shipped model file: a Keras `.keras` archive that also carries its metadata.

The metadata (classes, input shape, preprocessing, temperature, recipe, metrics) is an extra
JSON member of the same zip archive, so the file cannot be separated from it.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from emotion.labels import EMOTIONS, FACE_SIZE

METADATA_MEMBER = "emotion_metadata.json"
PREPROCESSING = "48x48 grayscale uint8 values as float32 in [0, 255]; the model rescales them itself"


def save_atomically(model, path: Path, metadata: dict | None = None) -> None:
    """Write `model` (and `metadata`, if given) to `path`; a crash midway leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.keras")
    model.save(partial)
    if metadata is not None:
        with zipfile.ZipFile(partial, "a") as archive:
            archive.writestr(METADATA_MEMBER, json.dumps(metadata, indent=2))
    os.replace(partial, path)


def save_model(model, path: Path, recipe: dict, metrics: dict) -> None:
    """Write the shipped model with its metadata to `path`, atomically."""
    metadata = {
        "classes": list(EMOTIONS),
        "input_shape": [FACE_SIZE, FACE_SIZE, 1],
        "preprocessing": PREPROCESSING,
        "temperature": metrics.get("temperature", 1.0),
        "recipe": recipe,
        "metrics": metrics,
    }
    save_atomically(model, path, metadata)


def read_metadata(path: Path) -> dict:
    """The metadata stored in a model file; {} for a Keras file saved without it."""
    with zipfile.ZipFile(path) as archive:
        if METADATA_MEMBER not in archive.namelist():
            return {}
        return json.loads(archive.read(METADATA_MEMBER))
