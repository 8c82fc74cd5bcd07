"""Load the emotion model and classify 48x48 face crops.

The Keras file in model/ is the source of truth. The classifier runs its TensorFlow Lite
conversion with dynamic-range int8 weights (LiteRT's XNNPACK kernels), which is faster than the
float32 model and agrees with it within the bounds that tests/test_classifier.py checks on
validation faces: no probability differs by more than 0.05, and the mean difference is at most
0.005 (model/MODEL_CARD.md gives the measured figures, its speed too).
Model files written by `emotion.model_file.save_model` carry that conversion, so loading them
needs no TensorFlow; any other Keras file is converted when loaded.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from emotion.labels import EMOTIONS, FACE_SIZE
from emotion.model_file import (
    ModelMetadata,
    convert_to_tflite,
    read_model_metadata,
    read_runtime,
    shipped_file,
)

logger = logging.getLogger(__name__)

BUNDLED_MODEL = shipped_file("emotion_cnn.keras")
# One thread per call, as the face finders: callers run side by side (webcam sessions, photos,
# API requests). A second thread answers one face a little sooner but costs more CPU than that,
# waking and spinning while a webcam waits for its next frame (the README's webcam rounds).
INFERENCE_THREADS = 1


class ModelError(ValueError):
    """The model file is missing, unreadable, or not a 7-emotion 48x48 classifier."""


class EmotionClassifier:
    """Probabilities over EMOTIONS for batches of faces; safe to share between threads."""

    def __init__(self, tflite_model: bytes, metadata: ModelMetadata | Mapping[str, Any], source: Path):
        """metadata: the model file's (a mapping as stored is read into ModelMetadata)."""
        from ai_edge_litert.interpreter import Interpreter

        if not isinstance(metadata, ModelMetadata):
            metadata = ModelMetadata.from_stored(metadata)
        self.metadata = metadata
        self.source = source
        self._interpreter = Interpreter(model_content=tflite_model, num_threads=INFERENCE_THREADS)
        input_details = self._interpreter.get_input_details()[0]
        output_details = self._interpreter.get_output_details()[0]
        self._check_shapes(tuple(input_details["shape"][1:]), tuple(output_details["shape"][1:]))
        self._input, self._output = input_details["index"], output_details["index"]
        self._batch_size = 0
        # One interpreter serves every caller: it is not re-entrant, and on a small CPU a
        # queue of batches is as fast as parallel interpreters that fight for the cores.
        self._lock = threading.Lock()

    @cached_property
    def sha256(self) -> str:
        """The model file's SHA-256: which model read a face, in the detection events."""
        return hashlib.sha256(self.source.read_bytes()).hexdigest()

    def _check_shapes(self, input_shape: tuple, output_shape: tuple) -> None:
        """Raise ModelError unless the model maps (N, 48, 48, 1) faces to len(EMOTIONS) values."""
        if input_shape != (FACE_SIZE, FACE_SIZE, 1):
            raise ModelError(f"{self.source} expects input {input_shape}, not {(FACE_SIZE, FACE_SIZE, 1)}")
        if output_shape != (len(EMOTIONS),):
            raise ModelError(f"{self.source} outputs {output_shape} values, not {len(EMOTIONS)} emotions")

    def predict_proba(self, faces: np.ndarray) -> np.ndarray:
        """faces: uint8 (N, 48, 48) grayscale crops -> float32 (N, 7), rows summing to 1."""
        faces = np.asarray(faces)
        if faces.ndim != 3 or faces.shape[1:] != (FACE_SIZE, FACE_SIZE):
            raise ValueError(f"faces must have shape (N, {FACE_SIZE}, {FACE_SIZE}), got {faces.shape}")
        if len(faces) == 0:
            return np.zeros((0, len(EMOTIONS)), dtype=np.float32)
        batch = faces.astype(np.float32)[..., None]  # (N, 48, 48, 1)
        with self._lock:
            if len(batch) != self._batch_size:
                self._interpreter.resize_tensor_input(self._input, batch.shape)
                self._interpreter.allocate_tensors()
                self._batch_size = len(batch)
            self._interpreter.set_tensor(self._input, batch)
            self._interpreter.invoke()
            probabilities = self._interpreter.get_tensor(self._output).copy()
        # Renormalise in float32 so rows sum to 1 despite the int8 weights' rounding.
        return probabilities / probabilities.sum(axis=1, keepdims=True)


def load_classifier(path: str | Path | None = None) -> EmotionClassifier:
    """The classifier in `path`; None means the bundled model (MODEL_URL's: see emotion.remote)."""
    path = Path(path) if path is not None else BUNDLED_MODEL
    if not path.is_file():
        raise ModelError(f"No model file at {path}")
    try:
        metadata = read_model_metadata(path)
        runtime = read_runtime(path, metadata)
        if runtime is None:  # a Keras file without (a current) embedded runtime: convert it now
            import keras

            runtime = convert_to_tflite(keras.saving.load_model(path, compile=False))
    except Exception as error:  # zipfile, Keras and the converter raise many types for a bad archive
        raise ModelError(f"{path} is not a readable Keras model: {error}") from error
    if metadata.classes != EMOTIONS:
        raise ModelError(f"{path} was trained for classes {metadata.classes}, not {EMOTIONS}")
    try:
        classifier = EmotionClassifier(runtime, metadata, path)
        # One blank face proves the runtime runs and answers with probabilities.
        probabilities = classifier.predict_proba(np.zeros((1, FACE_SIZE, FACE_SIZE), np.uint8))
    except ModelError:
        raise
    except Exception as error:  # LiteRT raises ValueError or RuntimeError for a broken runtime
        raise ModelError(f"{path} carries a runtime that does not run: {error}") from error
    if not np.all(np.isfinite(probabilities)):
        raise ModelError(f"{path} answers a blank face with values that are not probabilities")
    logger.info("Loaded emotion model %s", path)
    return classifier
