"""The CNN: a plain Keras 3 Functional builder.

Preprocessing lives inside the model (uint8-range grayscale in, probabilities out), so the
trainer, the classifier, the notebook and any exported copy cannot disagree about it.
"""

from __future__ import annotations

from emotion.labels import EMOTIONS, FACE_SIZE


def build_model(
    widths: tuple[int, ...],
    convs_per_stage: int,
    dense_units: int,
    dropout: float,
    temperature: float = 1.0,
    augmentation: dict | None = None,
):
    """A VGG-style CNN: stages of 3x3 conv + BatchNorm + ReLU, each halving the resolution.

    The settings come from `emotion.training.train.Recipe.architecture()`, their one home.

    Input: (N, 48, 48, 1) grayscale in [0, 255]. Output: (N, 7) probabilities in EMOTIONS
    order. `temperature` divides the logits before the softmax (fitted on val after training).
    `augmentation`: keyword arguments of emotion.training.augment.Augment, a first layer that acts only
    in training; the trainer builds with it, the shipped model without (it has no weights).
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(FACE_SIZE, FACE_SIZE, 1), name="face")
    x = inputs
    if augmentation is not None:
        from emotion.training.augment import Augment

        x = Augment(**augmentation, name="augment")(x)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(x)
    for stage, width in enumerate(widths):
        for conv in range(convs_per_stage):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{stage}_{conv}")(x)
            x = layers.BatchNormalization(name=f"bn{stage}_{conv}")(x)
            x = layers.ReLU(name=f"relu{stage}_{conv}")(x)
        x = layers.MaxPooling2D(name=f"pool{stage}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="drop_features")(x)
    x = layers.Dense(dense_units, use_bias=False, name="dense")(x)
    x = layers.BatchNormalization(name="bn_dense")(x)
    x = layers.ReLU(name="relu_dense")(x)
    x = layers.Dropout(dropout, name="drop_dense")(x)
    logits = layers.Dense(len(EMOTIONS), name="logits", dtype="float32")(x)
    scaled = layers.Rescaling(1.0 / temperature, name="temperature", dtype="float32")(logits)
    outputs = layers.Softmax(name="probabilities", dtype="float32")(scaled)
    return keras.Model(inputs, outputs, name="emotion_cnn")
