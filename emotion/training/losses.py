"""The training loss: cross-entropy against target distributions, optionally logit-adjusted.

Imports Keras: load it only where a model is trained.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="emotion")
class AdjustedCrossEntropy(keras.losses.Loss):
    """Cross-entropy of the model's probabilities against (N, 7) target distributions (vote
    shares or one-hot labels), after adding `offsets` to the logits.

    With offsets tau * log(prior), rare emotions must win by a margin in training, so the plain
    logits favour them at inference (logit adjustment, Menon et al., ICLR 2021). All offsets 0:
    ordinary cross-entropy. `label_smoothing` spreads that share of each target evenly.
    """

    def __init__(self, offsets, label_smoothing: float = 0.0, name: str = "adjusted_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.offsets = [float(offset) for offset in offsets]
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        classes = len(self.offsets)
        y_true = ops.cast(y_true, "float32")
        y_true = y_true * (1.0 - self.label_smoothing) + self.label_smoothing / classes
        # log(softmax(z)) + offsets, renormalised, is log(softmax(z + offsets)).
        log_probabilities = ops.log(ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0))
        adjusted = log_probabilities + ops.convert_to_tensor(self.offsets, dtype="float32")
        adjusted = adjusted - ops.logsumexp(adjusted, axis=-1, keepdims=True)
        return -ops.sum(y_true * adjusted, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "offsets": self.offsets, "label_smoothing": self.label_smoothing}
