"""Facial emotion recognition: find faces, classify them into EMOTIONS, track them in video.

Importing this package is cheap: TensorFlow is only loaded by `load_classifier`.
"""

from emotion.classifier import EmotionClassifier, ModelError, load_classifier
from emotion.draw import annotate
from emotion.faces import Box, DetectorSettings, crop_faces, detect_faces
from emotion.image import InvalidImage, load_image
from emotion.labels import EMOTIONS, FACE_SIZE
from emotion.pipeline import Face, analyze_image, classify_faces
from emotion.remote import ModelDownloadError, load_configured_classifier, resolve_model

__all__ = [
    "EMOTIONS",
    "FACE_SIZE",
    "Box",
    "DetectorSettings",
    "EmotionClassifier",
    "Face",
    "InvalidImage",
    "ModelDownloadError",
    "ModelError",
    "analyze_image",
    "annotate",
    "classify_faces",
    "crop_faces",
    "detect_faces",
    "load_classifier",
    "load_configured_classifier",
    "load_image",
    "resolve_model",
]
