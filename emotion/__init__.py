"""Facial emotion recognition: find faces, classify them into EMOTIONS, track them in video.

Importing this package is cheap, and so is loading a model file written by this package:
TensorFlow is only imported to train, or to load a Keras file that carries no runtime.
"""

from emotion.classifier import EmotionClassifier, ModelError, load_classifier
from emotion.draw import annotate
from emotion.engagement import PRESETS as ENGAGEMENT_PRESETS
from emotion.engagement import EngagementPreset, engagement_score
from emotion.faces import Box, DetectorSettings, crop_faces, detect_faces
from emotion.image import InvalidImage, load_image
from emotion.labels import EMOTIONS, FACE_SIZE
from emotion.live import LiveAnalyzer, LiveSettings, SessionSnapshot, TrackedFace
from emotion.pipeline import Face, analyze_image, classify_faces
from emotion.remote import ModelDownloadError, load_configured_classifier, resolve_model
from emotion.video import InvalidVideo, VideoResult, process_video

__all__ = [
    "EMOTIONS",
    "ENGAGEMENT_PRESETS",
    "FACE_SIZE",
    "Box",
    "DetectorSettings",
    "EmotionClassifier",
    "EngagementPreset",
    "Face",
    "InvalidImage",
    "InvalidVideo",
    "LiveAnalyzer",
    "LiveSettings",
    "ModelDownloadError",
    "ModelError",
    "SessionSnapshot",
    "TrackedFace",
    "VideoResult",
    "analyze_image",
    "annotate",
    "classify_faces",
    "crop_faces",
    "detect_faces",
    "engagement_score",
    "load_classifier",
    "load_configured_classifier",
    "load_image",
    "process_video",
    "resolve_model",
]
