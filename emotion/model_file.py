"""The shipped model file: a Keras `.keras` archive that also carries its metadata and runtime.

The metadata (classes, input shape, preprocessing, temperature, recipe, metrics) is an extra
JSON member of the same zip archive, so the file cannot be separated from it. So is the
TensorFlow Lite conversion the classifier runs, stamped with the SHA-256 of the Keras weights
it was converted from: loading it needs neither TensorFlow nor a conversion at start-up, and a
runtime that no longer matches the weights is ignored (the Keras model is the source of truth).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import io
import json
import logging
import os
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from emotion.labels import EMOTIONS, FACE_SIZE

logger = logging.getLogger(__name__)

METADATA_MEMBER = "emotion_metadata.json"
RUNTIME_MEMBER = "emotion_runtime.tflite"
WEIGHTS_MEMBER = "model.weights.h5"  # where Keras 3 keeps the weights inside a .keras archive
PREPROCESSING = "48x48 grayscale uint8 values as float32 in [0, 255]; the model rescales them itself"
# The package holding model/'s files: the installed engine's (pyproject.toml maps it onto model/),
# else the checkout's own model/ package, where the checkout runs without installing the engine
# (`streamlit run app.py` on Community Cloud, the container image's page) from its root.
SHIPPED_PACKAGES = ("emotion.model", "model")


def shipped_file(name: str) -> Path:
    """The path of a file shipped in model/ (the emotion model, BlazeFace, the cards).

    Without either package (Spark executors given only the engine's modules), model/ in the
    working folder: reading a missing file fails there, with its name, and importing does not.
    """
    for package in SHIPPED_PACKAGES:
        try:
            folder = importlib.resources.files(package)
        except ModuleNotFoundError:
            continue
        # Wheels install unzipped: the package data is a file that keeps its path.
        return Path(str(folder / name))
    return Path("model") / name


def convert_to_tflite(model) -> bytes:
    """The Keras model as TensorFlow Lite with dynamic-range int8 weights."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    # The converter warns about deprecations and prints where it exported the model to stdout,
    # which belongs to the caller (the CLI writes JSON lines there).
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return converter.convert()


def save_atomically(model, path: Path, metadata: dict | None = None, runtime: bytes | None = None) -> None:
    """Write `model` (and `metadata`, `runtime` if given) to `path`; a crash midway leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.keras")
    model.save(partial)
    if metadata is not None:
        with zipfile.ZipFile(partial, "a") as archive:
            if runtime is not None:
                metadata = {**metadata, "runtime_weights_sha256": _sha256(archive.read(WEIGHTS_MEMBER))}
                archive.writestr(RUNTIME_MEMBER, runtime)
            archive.writestr(METADATA_MEMBER, json.dumps(metadata, indent=2))
    os.replace(partial, path)


def save_model(model, path: Path, recipe: dict, metrics: dict, runtime: bytes | None = None) -> None:
    """Write the shipped model with its metadata and its TensorFlow Lite runtime to `path`, atomically.

    `runtime`: the model's conversion (convert_to_tflite), made here when not given. A model
    trained with Keras on JAX or PyTorch is written without it (with a warning):
    `emotion.load_classifier` converts it when it loads it, or `python -m emotion.training --resume`
    on the TensorFlow backend writes it again with one.
    """
    metadata = {
        "classes": list(EMOTIONS),
        "input_shape": [FACE_SIZE, FACE_SIZE, 1],
        "preprocessing": PREPROCESSING,
        "temperature": metrics.get("temperature", 1.0),
        "recipe": recipe,
        "metrics": metrics,
    }
    import keras

    if runtime is None and keras.backend.backend() == "tensorflow":
        runtime = convert_to_tflite(model)
    elif runtime is None:  # the converter takes TensorFlow models only
        logger.warning(
            "Keras runs on %s: %s carries no runtime and is converted when loaded",
            keras.backend.backend(),
            path,
        )
    save_atomically(model, path, metadata, runtime=runtime)


def read_metadata(path: Path) -> dict:
    """The metadata stored in a model file; {} for a Keras file saved without it.

    Raises ValueError when it is not a JSON object whose classes (if given) are a list of names.
    """
    with zipfile.ZipFile(path) as archive:
        if METADATA_MEMBER not in archive.namelist():
            return {}
        metadata = json.loads(archive.read(METADATA_MEMBER))
    if not isinstance(metadata, dict):
        raise ValueError(f"{METADATA_MEMBER} is not a JSON object")
    _classes(metadata)
    return metadata


class ClassFigures(NamedTuple):
    precision: float | None
    recall: float | None
    support: int | None  # validation faces of this emotion


@dataclass(frozen=True)
class PosedFigures:
    """On faces of people acting emotions, read as the emotion acted: posed photos (CK+) or
    frames of people acting at a camera (KDEF-dyn, as the pipeline cuts them)."""

    accuracy: float | None
    mean_recall: float | None
    recall: Mapping[str, float]  # per emotion acted
    images: int | None

    @classmethod
    def from_stored(cls, stored: Any) -> PosedFigures | None:
        stored = _mapping(stored)
        if not stored:
            return None
        return cls(
            accuracy=_number(stored.get("accuracy")),
            mean_recall=_number(stored.get("mean_recall")),
            recall=MappingProxyType(
                {
                    emotion: recall
                    for emotion, value in _mapping(stored.get("recall")).items()
                    if (recall := _number(value)) is not None
                }
            ),
            images=_count(stored.get("images")),
        )


@dataclass(frozen=True)
class ModelFigures:
    """One evaluation of a model, as training stored it (emotion.training.evaluate)."""

    accuracy: float | None  # on the labelled validation faces, against most of their ten readers
    mean_recall: float | None
    ece_votes: float | None  # calibration: distance of the probabilities from the vote shares
    labelled_images: int | None
    per_class: Mapping[str, ClassFigures]  # in EMOTIONS order; empty when not stored
    posed: PosedFigures | None  # posed photos (CK+)
    acted: PosedFigures | None  # people acting at a camera (KDEF-dyn frames)

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> ModelFigures:
        per_class = _mapping(stored.get("per_class"))
        return cls(
            accuracy=_number(stored.get("val_accuracy")),
            mean_recall=_number(stored.get("val_mean_recall")),
            ece_votes=_number(stored.get("ece_votes")),
            labelled_images=_count(stored.get("val_labelled_images")),
            per_class=MappingProxyType(
                {
                    emotion: ClassFigures(
                        _number(figures.get("precision")),
                        _number(figures.get("recall")),
                        _count(figures.get("support")),
                    )
                    for emotion in EMOTIONS
                    if (figures := _mapping(per_class.get(emotion)))
                }
            ),
            posed=PosedFigures.from_stored(stored.get("posed")),
            acted=PosedFigures.from_stored(stored.get("acted")),
        )


@dataclass(frozen=True)
class ModelMetadata(Mapping[str, Any]):
    """What a model file says of itself (its METADATA_MEMBER), typed: one value for the page's
    model card, GET /v1/model and the classifier's checks.

    As a mapping it is the JSON as stored, for readers of the file's own members (read_runtime)
    and for the figures passed on whole (the API's `metrics`).
    """

    classes: tuple[str, ...] = EMOTIONS
    input_shape: tuple[int, ...] | None = None
    preprocessing: str | None = None
    temperature: float = 1.0
    runtime_weights_sha256: str | None = None  # the weights the embedded runtime was made from
    figures: ModelFigures | None = None  # the app's own runtime's where measured, else the Keras model's
    train_images: int | None = None
    parameters: int | None = None
    stored: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> ModelMetadata:
        """Raises ValueError when the classes (if given) are not a list of names."""
        classes = _classes(stored)
        input_shape = stored.get("input_shape")
        metrics = _mapping(stored.get("metrics"))
        runtime = _mapping(metrics.get("runtime"))
        preprocessing, weights = stored.get("preprocessing"), stored.get("runtime_weights_sha256")
        return cls(
            classes=tuple(classes),
            input_shape=tuple(input_shape)
            if isinstance(input_shape, list) and all(_count(size) is not None for size in input_shape)
            else None,
            preprocessing=preprocessing if isinstance(preprocessing, str) else None,
            temperature=_number(stored.get("temperature")) or 1.0,
            runtime_weights_sha256=weights if isinstance(weights, str) else None,
            figures=ModelFigures.from_stored(runtime or metrics) if metrics else None,
            train_images=_count(metrics.get("train_images")),
            parameters=_count(metrics.get("parameters")),
            stored=MappingProxyType(dict(stored)),
        )

    @property
    def metrics(self) -> Mapping[str, Any]:
        """The figures as training stored them."""
        return _mapping(self.stored.get("metrics"))

    def __getitem__(self, key: str) -> Any:
        return self.stored[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.stored)

    def __len__(self) -> int:
        return len(self.stored)


def read_model_metadata(path: Path) -> ModelMetadata:
    """The metadata of a model file, typed (see read_metadata for what raises)."""
    return ModelMetadata.from_stored(read_metadata(path))


def _classes(stored: Mapping[str, Any]) -> list[str]:
    """The stored class names (EMOTIONS where none are); ValueError unless a list of names."""
    classes = stored.get("classes", list(EMOTIONS))
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        raise ValueError(f"the classes in {METADATA_MEMBER} are not a list of names")
    return classes


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_runtime(path: Path, metadata: Mapping[str, Any]) -> bytes | None:
    """The embedded TensorFlow Lite model, or None when absent or not made from these weights."""
    expected = metadata.get("runtime_weights_sha256")
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        if not expected or RUNTIME_MEMBER not in names or WEIGHTS_MEMBER not in names:
            return None
        if _sha256(archive.read(WEIGHTS_MEMBER)) != expected:
            return None
        return archive.read(RUNTIME_MEMBER)


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
