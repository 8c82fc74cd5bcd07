"""Accuracy, per-class figures, confusion matrix and calibration of a model on labelled faces."""

from __future__ import annotations

import numpy as np

from emotion.labels import EMOTIONS

CALIBRATION_BINS = 15  # equal-width confidence bins for the expected calibration error


def predict_logits(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, 48, 48) uint8 -> (N, 7) float64 pre-softmax logits (before any temperature)."""
    import keras

    logits_model = keras.Model(model.inputs, model.get_layer("logits").output)
    return logits_model.predict(images[..., None].astype("float32"), batch_size=batch_size, verbose=0).astype(
        "float64"
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, None))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood, by a fine grid search."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(4.0), 401))
    losses = [negative_log_likelihood(softmax(logits / t), labels) for t in grid]
    return float(grid[int(np.argmin(losses))])


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray) -> float:
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1]), 0, CALIBRATION_BINS - 1)
    error = 0.0
    for index in range(CALIBRATION_BINS):
        members = bins == index
        if members.any():
            error += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(error)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """(7, 7) counts; row = true class, column = predicted class."""
    matrix = np.zeros((len(EMOTIONS), len(EMOTIONS)), dtype="int64")
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def classification_figures(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    predictions = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predictions)
    per_class = {}
    for index, name in enumerate(EMOTIONS):
        predicted, actual = matrix[:, index].sum(), matrix[index].sum()
        per_class[name] = {
            "precision": float(matrix[index, index] / predicted) if predicted else 0.0,
            "recall": float(matrix[index, index] / actual) if actual else 0.0,
            "support": int(actual),
        }
    return {
        "accuracy": float((predictions == labels).mean()),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def evaluate_model(model, images: np.ndarray, labels: np.ndarray, uncalibrated_logits: np.ndarray) -> dict:
    """Figures for the model card: plain and flip-averaged accuracy, per class, calibration."""
    probabilities = model.predict(images[..., None].astype("float32"), batch_size=256, verbose=0)
    flipped = model.predict(images[:, :, ::-1, None].astype("float32"), batch_size=256, verbose=0)
    figures = classification_figures(probabilities, labels)
    uncalibrated = softmax(uncalibrated_logits)
    return {
        "val_images": len(labels),
        "val_accuracy": figures["accuracy"],
        "val_accuracy_flip": float((((probabilities + flipped) / 2).argmax(axis=1) == labels).mean()),
        "per_class": figures["per_class"],
        "confusion_matrix": figures["confusion_matrix"],
        "ece_before": expected_calibration_error(uncalibrated, labels),
        "ece_after": expected_calibration_error(probabilities, labels),
        "nll_before": negative_log_likelihood(uncalibrated, labels),
        "nll_after": negative_log_likelihood(probabilities, labels),
    }
