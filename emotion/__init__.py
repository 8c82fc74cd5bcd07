"""Facial emotion recognition: find faces, classify them into EMOTIONS, track them in video.

Importing this package is cheap: TensorFlow is only loaded by `load_classifier`.
"""

from emotion.classifier import EmotionClassifier, ModelError, load_classifier
from emotion.labels import EMOTIONS, FACE_SIZE
from emotion.remote import ModelDownloadError, load_configured_classifier, resolve_model

__all__ = [
    "EMOTIONS",
    "FACE_SIZE",
    "EmotionClassifier",
    "ModelDownloadError",
    "ModelError",
    "load_classifier",
    "load_configured_classifier",
    "resolve_model",
]
