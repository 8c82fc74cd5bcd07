"""Training-time augmentation as a Keras layer, so it runs inside the compiled training step on
any Keras backend (TensorFlow on a CPU, JAX or PyTorch on a GPU) and is an identity at inference.

Imports Keras: load it only where a model is built or trained, never at the app's start-up.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from emotion.labels import FACE_SIZE

MIN_ERASE_AREA = 0.02  # share of the image; smaller rectangles hide too little to matter
MAX_ERASE_ASPECT = 3.0  # rectangles from 1:3 to 3:1
# The constructor's settings; their defaults live in emotion.training.train.Recipe.
SETTINGS = (
    "max_rotation_deg",
    "max_zoom",
    "max_shift_px",
    "erase_probability",
    "max_erase_area",
    "max_log_gamma",
    "max_log_contrast",
    "max_blur",
    "max_noise",
    "seed",
)


@keras.saving.register_keras_serializable(package="emotion")
class Augment(keras.layers.Layer):
    """Random flip, rotation, zoom and shift (one affine warp per face, reflected borders); then,
    where asked, lighting and lens: a gamma, a contrast about the face's mean, a blur and sensor
    noise drawn per face, so that faces lit and filmed unlike web photos (a lab, a webcam) look
    familiar; then random erasing: a rectangle of noise over part of some faces, so that the
    model cannot lean on any one part of the face (Zhong et al., 2020).

    Input and output: (N, 48, 48, 1) float32 grey levels in [0, 255]. Only with training=True.
    """

    def __init__(
        self,
        max_rotation_deg: float,
        max_zoom: float,
        max_shift_px: float,
        erase_probability: float,
        max_erase_area: float,
        seed: int | None,
        max_log_gamma: float = 0.0,
        max_log_contrast: float = 0.0,
        max_blur: float = 0.0,
        max_noise: float = 0.0,
        **kwargs,
    ):
        # Warping grey levels in bfloat16 would round them: augment in float32 whatever the policy.
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.max_rotation_deg = max_rotation_deg
        self.max_zoom = max_zoom
        self.max_shift_px = max_shift_px
        self.erase_probability = erase_probability
        self.max_erase_area = max_erase_area
        self.max_log_gamma = max_log_gamma
        self.max_log_contrast = max_log_contrast
        self.max_blur = max_blur
        self.max_noise = max_noise
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        if not training:
            return images
        images = self.warp(images)
        # Without lighting settings no random numbers are drawn for it, so older recipes repeat.
        if self.max_log_gamma or self.max_log_contrast or self.max_blur or self.max_noise:
            images = self.relight(images)
        if self.erase_probability <= 0.0:
            return images
        return self.erase(images)

    def _uniform(self, count, low=0.0, high=1.0):
        return keras.random.uniform((count,), low, high, seed=self.seed_generator)

    def warp(self, images):
        """One random affine warp per image: flip, rotation, zoom and shift about the centre."""
        count = ops.shape(images)[0]
        angle = self._uniform(count, -1.0, 1.0) * self.max_rotation_deg * math.pi / 180.0
        scale = 1.0 + self._uniform(count, -self.max_zoom, self.max_zoom)
        flip = ops.where(self._uniform(count) < 0.5, -1.0, 1.0)
        shift_x = self._uniform(count, -self.max_shift_px, self.max_shift_px)
        shift_y = self._uniform(count, -self.max_shift_px, self.max_shift_px)
        # The transform maps each output pixel to the input pixel it samples.
        center = (FACE_SIZE - 1) / 2.0
        cos, sin = ops.cos(angle) / scale, ops.sin(angle) / scale
        a0, a1 = cos * flip, -sin
        b0, b1 = sin * flip, cos
        a2 = center - a0 * center - a1 * center + shift_x
        b2 = center - b0 * center - b1 * center + shift_y
        zeros = ops.zeros_like(a0)
        transforms = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)  # (N, 8)
        return ops.image.affine_transform(
            images, transforms, interpolation="bilinear", fill_mode="reflect", data_format="channels_last"
        )

    def relight(self, images):
        """Per face: grey levels raised to a gamma of exp(+-max_log_gamma), contrast about the
        face's mean scaled by exp(+-max_log_contrast), a share of up to max_blur of a 3x3 box
        blur mixed in, and Gaussian noise of up to max_noise grey levels; clipped to [0, 255]."""
        count = ops.shape(images)[0]

        def per_image(values):
            return ops.reshape(values, (-1, 1, 1, 1))

        unit = images / 255.0
        gamma = ops.exp(self._uniform(count, -self.max_log_gamma, self.max_log_gamma))
        unit = ops.power(unit, per_image(gamma))
        contrast = ops.exp(self._uniform(count, -self.max_log_contrast, self.max_log_contrast))
        mean = ops.mean(unit, axis=(1, 2, 3), keepdims=True)
        unit = mean + (unit - mean) * per_image(contrast)
        blurred = ops.average_pool(unit, pool_size=3, strides=1, padding="same", data_format="channels_last")
        blur = per_image(self._uniform(count, 0.0, self.max_blur))
        unit = (1.0 - blur) * unit + blur * blurred
        noise_levels = per_image(self._uniform(count, 0.0, self.max_noise / 255.0))
        unit = unit + noise_levels * keras.random.normal(ops.shape(unit), seed=self.seed_generator)
        return ops.clip(unit, 0.0, 1.0) * 255.0

    def erase(self, images):
        """With probability erase_probability per image, uniform noise over a random rectangle of
        MIN_ERASE_AREA to max_erase_area of the image."""
        count = ops.shape(images)[0]
        area = self._uniform(count, MIN_ERASE_AREA, self.max_erase_area) * FACE_SIZE**2
        aspect = ops.exp(self._uniform(count, -math.log(MAX_ERASE_ASPECT), math.log(MAX_ERASE_ASPECT)))
        height = ops.clip(ops.sqrt(area * aspect), 1.0, FACE_SIZE)
        width = ops.clip(ops.sqrt(area / aspect), 1.0, FACE_SIZE)
        top = self._uniform(count) * (FACE_SIZE - height)
        left = self._uniform(count) * (FACE_SIZE - width)
        erase = self._uniform(count) < self.erase_probability
        rows = ops.reshape(ops.arange(FACE_SIZE, dtype="float32"), (1, FACE_SIZE, 1))
        columns = ops.reshape(ops.arange(FACE_SIZE, dtype="float32"), (1, 1, FACE_SIZE))

        def per_image(values):
            return ops.reshape(values, (-1, 1, 1))

        inside = (
            (rows >= per_image(top))
            & (rows < per_image(top + height))
            & (columns >= per_image(left))
            & (columns < per_image(left + width))
            & per_image(erase)
        )[..., None]  # (N, 48, 48, 1)
        noise = keras.random.uniform(ops.shape(images), 0.0, 255.0, seed=self.seed_generator)
        return ops.where(inside, noise, images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), **{name: getattr(self, name) for name in SETTINGS}}
