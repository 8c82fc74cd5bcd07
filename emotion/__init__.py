"""Facial emotion recognition: find faces, classify them into EMOTIONS, track them in video.

Importing this package is cheap: TensorFlow is only loaded by `load_classifier`.
"""

from emotion.classifier import EmotionClassifier, ModelError, load_classifier
from emotion.labels import EMOTIONS, FACE_SIZE

__all__ = [
    "EMOTIONS",
    "FACE_SIZE",
    "EmotionClassifier",
    "ModelError",
    "load_classifier",
]
