"""Accuracy, per-class figures, confusion matrix and calibration of a model on labelled faces.

Faces may carry the shares of annotators who chose each emotion (FER+'s ten votes): then the
labels are the majority (-1 where there is none: such faces count only in the vote figures),
the temperature is fitted to the shares, and the figures say how far the probabilities are
from them (mean KL divergence).
"""

from __future__ import annotations

import numpy as np

from emotion.labels import EMOTIONS

CALIBRATION_BINS = 15  # equal-width confidence bins for the expected calibration error
ACCURACY_KEPT = 0.005  # a prior correction may cost at most half a point of accuracy


def as_model_input(images: np.ndarray) -> np.ndarray:
    """(N, 48, 48) uint8 faces -> (N, 48, 48, 1) float32, what the model takes."""
    return images[..., None].astype("float32")


def predict_logits(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, 48, 48) uint8 -> (N, 7) float64 pre-softmax logits (before any temperature)."""
    import keras

    logits_model = keras.Model(model.inputs, model.get_layer("logits").output)
    return logits_model.predict(as_model_input(images), batch_size=batch_size, verbose=0).astype("float64")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def cross_entropy(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Mean cross-entropy of (N, 7) probabilities against (N, 7) target distributions."""
    return float(-np.mean(np.sum(targets * np.log(np.clip(probabilities, 1e-12, None)), axis=1)))


def mean_kl_divergence(targets: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean KL(targets || probabilities): how far the model's answers are from the vote shares."""
    ratio = np.log(np.clip(targets, 1e-12, None)) - np.log(np.clip(probabilities, 1e-12, None))
    return float(np.mean(np.sum(np.where(targets > 0, targets * ratio, 0.0), axis=1)))


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature that minimises the cross-entropy against (N, 7) targets (one-hot labels
    or vote shares), by a fine grid search."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(4.0), 401))
    losses = [cross_entropy(softmax(logits / t), targets) for t in grid]
    return float(grid[int(np.argmin(losses))])


def balanced_score(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean per-class recall) on the faces with a label (labels >= 0)."""
    figures = classification_figures(probabilities, labels)
    return figures["accuracy"], figures["mean_recall"]


def fit_prior_correction(logits: np.ndarray, labels: np.ndarray, prior: np.ndarray) -> float:
    """The strength tau of the correction logits - tau * log(prior) that lifts the mean per-class
    recall most on these faces while keeping their accuracy within ACCURACY_KEPT of the
    uncorrected one (tau = 0: none; 1: divide the answer by the prior)."""
    grid = np.round(np.arange(0.0, 1.51, 0.05), 2)
    scores = [balanced_score(logits - tau * np.log(prior), labels) for tau in grid]
    floor = scores[0][0] - ACCURACY_KEPT
    allowed = [
        (recall, -tau) for tau, (accuracy, recall) in zip(grid, scores, strict=True) if accuracy >= floor
    ]
    _recall, negative_tau = max(allowed)  # the weakest correction among equals
    return float(-negative_tau)


def binned_gap(confidence: np.ndarray, outcome: np.ndarray) -> float:
    """The mean |confidence - outcome| within CALIBRATION_BINS equal-width bins of confidence,
    weighted by the share of faces in each bin."""
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1]), 0, CALIBRATION_BINS - 1)
    error = 0.0
    for index in range(CALIBRATION_BINS):
        members = bins == index
        if members.any():
            error += members.mean() * abs(confidence[members].mean() - outcome[members].mean())
    return float(error)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """How far confidence is from accuracy (against the labels), on the labelled faces."""
    labelled = labels >= 0
    probabilities, labels = probabilities[labelled], labels[labelled]
    return binned_gap(probabilities.max(axis=1), probabilities.argmax(axis=1) == labels)


def vote_calibration_error(probabilities: np.ndarray, shares: np.ndarray) -> float:
    """How far each face's top probability is from the share of annotators who chose that emotion:
    0.07 means "70 %" is on average 7 points from the share of people who read the face so."""
    chosen = shares[np.arange(len(shares)), probabilities.argmax(axis=1)]
    return binned_gap(probabilities.max(axis=1), chosen)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """(7, 7) counts; row = true class, column = predicted class."""
    matrix = np.zeros((len(EMOTIONS), len(EMOTIONS)), dtype="int64")
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def classification_figures(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, mean per-class recall, per-class precision and recall and the confusion matrix,
    on the faces with a label (labels >= 0)."""
    labelled = labels >= 0
    probabilities, labels = probabilities[labelled], labels[labelled]
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
        "mean_recall": float(
            np.mean([values["recall"] for values in per_class.values() if values["support"]])
        ),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def recall_figures(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, mean per-class recall and each present emotion's recall, on the labelled faces
    (for sets without every emotion, such as posed faces, which have no neutral)."""
    figures = classification_figures(probabilities, labels)
    recall = {name: values["recall"] for name, values in figures["per_class"].items() if values["support"]}
    return {"accuracy": figures["accuracy"], "mean_recall": figures["mean_recall"], "recall": recall}


def split_figures(probabilities: np.ndarray, flipped: np.ndarray, faces) -> dict:
    """Figures for the model card from a model's (N, 7) answers on a labelled split
    (`emotion.training.train.Split`) and on its mirrored faces: accuracy, mean per-class recall,
    per class and calibration, plain and averaged with the mirrored face; with vote shares, the
    KL divergence from them; with original FER2013 labels, the accuracy against those too."""
    figures = classification_figures(probabilities, faces.labels)
    flip_figures = classification_figures((probabilities + flipped) / 2, faces.labels)
    metrics = {
        "val_images": len(faces.labels),
        "val_labelled_images": int((faces.labels >= 0).sum()),
        "val_accuracy": figures["accuracy"],
        "val_mean_recall": figures["mean_recall"],
        "val_accuracy_flip": flip_figures["accuracy"],
        "val_mean_recall_flip": flip_figures["mean_recall"],
        "per_class": figures["per_class"],
        "confusion_matrix": figures["confusion_matrix"],
        "ece": expected_calibration_error(probabilities, faces.labels),
        "cross_entropy": cross_entropy(probabilities, faces.targets),
    }
    if faces.has_votes:
        metrics["kl_votes"] = mean_kl_divergence(faces.targets, probabilities)
        metrics["ece_votes"] = vote_calibration_error(probabilities, faces.targets)
    if faces.original_labels is not None:
        original = classification_figures(probabilities, faces.original_labels)
        metrics["val_accuracy_original_labels"] = original["accuracy"]
    return metrics


def evaluate_model(model, faces, uncalibrated_logits: np.ndarray) -> dict:
    """split_figures of a Keras model, with the calibration before its temperature beside them."""
    probabilities = model.predict(as_model_input(faces.images), batch_size=256, verbose=0)
    flipped = model.predict(as_model_input(faces.images[:, :, ::-1]), batch_size=256, verbose=0)
    uncalibrated = softmax(uncalibrated_logits)
    return {
        **split_figures(probabilities, flipped, faces),
        "ece_before": expected_calibration_error(uncalibrated, faces.labels),
        "cross_entropy_before": cross_entropy(uncalibrated, faces.targets),
    }


def evaluate_classifier(classifier, faces) -> dict:
    """split_figures of an `emotion.EmotionClassifier`: the TensorFlow Lite runtime as the app runs it."""
    probabilities = classifier.predict_proba(faces.images)
    flipped = classifier.predict_proba(faces.images[:, :, ::-1])
    return split_figures(probabilities, flipped, faces)
