"""Facial emotion recognition: find faces, classify them into EMOTIONS, track them in video.

Importing this package is cheap: each name below is imported from its module on first use, so
`emotion.training` and `emotion.labels` load without OpenCV or PyAV. Loading a model file
written by this package needs no TensorFlow either: it is only imported to train, or to load a
Keras file that carries no runtime.
"""

from __future__ import annotations

import importlib

# Public name -> (module, name in that module).
_EXPORTS = {
    "AnalysisRequest": ("emotion.request", "AnalysisRequest"),
    "EMOTIONS": ("emotion.labels", "EMOTIONS"),
    "ENGAGEMENT_PRESETS": ("emotion.engagement", "PRESETS"),
    "FACE_SIZE": ("emotion.labels", "FACE_SIZE"),
    "Box": ("emotion.faces", "Box"),
    "Detection": ("emotion.faces", "Detection"),
    "DetectorSettings": ("emotion.faces", "DetectorSettings"),
    "EmotionClassifier": ("emotion.classifier", "EmotionClassifier"),
    "EngagementPreset": ("emotion.engagement", "EngagementPreset"),
    "Face": ("emotion.results", "Face"),
    "FaceRow": ("emotion.results", "FaceRow"),
    "InvalidImage": ("emotion.image", "InvalidImage"),
    "InvalidVideo": ("emotion.video", "InvalidVideo"),
    "LiveAnalyzer": ("emotion.live", "LiveAnalyzer"),
    "LiveSettings": ("emotion.live", "LiveSettings"),
    "ModelDownloadError": ("emotion.remote", "ModelDownloadError"),
    "ModelError": ("emotion.classifier", "ModelError"),
    "Photo": ("emotion.pipeline", "Photo"),
    "SessionSnapshot": ("emotion.session", "SessionSnapshot"),
    "VideoResult": ("emotion.video", "VideoResult"),
    "analyze_image": ("emotion.pipeline", "analyze_image"),
    "analyze_photo": ("emotion.pipeline", "analyze_photo"),
    "annotate": ("emotion.draw", "annotate"),
    "classify_faces": ("emotion.pipeline", "classify_faces"),
    "crop_faces": ("emotion.faces", "crop_faces"),
    "detect_faces": ("emotion.faces", "detect_faces"),
    "engagement_score": ("emotion.engagement", "engagement_score"),
    "load_classifier": ("emotion.classifier", "load_classifier"),
    "load_image": ("emotion.image", "load_image"),
    "photo_faces": ("emotion.pipeline", "photo_faces"),
    "photo_json": ("emotion.pipeline", "photo_json"),
    "photo_record": ("emotion.results", "photo_record"),
    "process_photo": ("emotion.pipeline", "process_photo"),
    "process_video": ("emotion.video", "process_video"),
    "resolve_model": ("emotion.remote", "resolve_model"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
