"""Train the emotion CNN and write the shipped model.

    python -m emotion.training --data ../shared/data/ferplus --out model/emotion_cnn.keras

The data folder holds `train.npz` and `val.npz` (see `python -m emotion.training.data`). Where
an archive carries FER+'s ten votes per face, the model learns the share of annotators who chose
each emotion (soft targets), and faces that most annotators called unknown or not a face are
left out; otherwise it learns the one label per face.

It trains with whichever Keras backend is set (KERAS_BACKEND: TensorFlow by default, or JAX or
PyTorch on a GPU machine); augmentation is a layer of the model, so it runs on the same device.
Every epoch writes `last.keras` (with optimizer state) and a CSV row to --checkpoints;
`--resume` continues from there, with the recipe saved there. The epoch with the best val
accuracy plus mean per-class recall is kept. Then, on val: a prior correction (logits - tau *
log(training prior)) is fitted and baked into the last layer's bias, and a softmax temperature
is fitted to the targets and baked into the model, together with its metadata.

With `--teachers` the targets are blended with what the teacher models, averaged over them and
over the mirrored face, say about each training face (knowledge distillation, Hinton et al., 2015).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import shutil
import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from emotion.labels import EMOTIONS, FACE_SIZE
from emotion.training.evaluate import as_model_input

if TYPE_CHECKING:
    from emotion.training.checkpoints import RunFolder

logger = logging.getLogger(__name__)

# FER+'s vote columns that are not one of our emotions but say the face can't be read.
UNREADABLE_VOTES = ("unknown", "NF")


def option(default, help: str, **kwargs):
    """A Recipe field: its default and its command-line help (the options are made from them)."""
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights, saved into the model's metadata.

    The single home of every training default: `python -m emotion.training` makes one option
    per field, and build_model and Augment take their settings from here.
    """

    epochs: int = option(100, "passes over the training faces")
    batch_size: int = option(128, "faces per step")
    peak_learning_rate: float = option(0.05, "SGD with Nesterov momentum: the peak of warm-up + cosine decay")
    warmup_epochs: int = option(2, "epochs of linear warm-up to the peak learning rate")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(5e-4, "decoupled weight decay")
    label_smoothing: float = option(0.1, "share of each target spread evenly over the emotions")
    widths: tuple[int, ...] = option((32, 64, 128, 256), "filters of each stage, comma-separated")
    convs_per_stage: int = option(2, "3x3 convolutions per stage")
    dense_units: int = option(256, "units of the dense layer")
    dropout: float = option(0.4, "dropout before and after the dense layer")
    max_rotation_deg: float = option(10.0, "augmentation: rotation up to this many degrees")
    max_zoom: float = option(0.1, "augmentation: scale drawn from [1 - max_zoom, 1 + max_zoom]")
    max_shift_px: float = option(4.0, "augmentation: shift up to this many pixels")
    erase_probability: float = option(0.5, "share of faces given a rectangle of noise (random erasing)")
    max_erase_area: float = option(0.25, "random erasing: area drawn from [0.02, this] of the image")
    max_log_gamma: float = option(0.0, "augmentation: gamma drawn from exp([-this, this]); 0 = none")
    max_log_contrast: float = option(
        0.0, "augmentation: contrast about the face's mean scaled by exp([-this, this]); 0 = none"
    )
    max_blur: float = option(0.0, "augmentation: share of a 3x3 box blur mixed in, drawn from [0, this]")
    max_noise: float = option(0.0, "augmentation: Gaussian noise of [0, this] grey levels")
    original_label_weight: float = option(
        0.0, "with FER+ votes: share of the face's original FER2013 label in its target"
    )
    logit_adjustment: float = option(
        0.0, "tau of the logit-adjusted loss (Menon et al., 2021): favours rare emotions; 0 = plain"
    )
    seed: int = option(1337, "random seed of weights, shuffling and augmentation")
    init_from: str | None = option(None, "start from this model's weights (same architecture)")
    teachers: tuple[str, ...] = option((), "models whose averaged answers are blended into the targets")
    distill_weight: float = option(0.7, "share of the teachers' answer in each target")
    distill_temperature: float = option(2.0, "softens the teachers' answers: softmax(logits / T)")

    def architecture(self) -> dict:
        """The keyword arguments of emotion.training.model.build_model that this recipe fixes."""
        return {
            "widths": self.widths,
            "convs_per_stage": self.convs_per_stage,
            "dense_units": self.dense_units,
            "dropout": self.dropout,
        }

    def augmentation(self) -> dict:
        """The keyword arguments of emotion.training.augment.Augment that this recipe fixes."""
        from emotion.training.augment import SETTINGS

        return {name: getattr(self, name) for name in SETTINGS}


class Split(NamedTuple):
    """The faces of one split and what is known about them."""

    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) int32: the label (FER+ majority or FER2013's), -1 where there is none
    targets: np.ndarray  # (N, 7) float32: vote shares, or the one-hot label
    original_labels: np.ndarray | None  # (N,) int32: FER2013's own labels, when the archive has them
    has_votes: bool


def load_split(data_dir: Path, split: str) -> Split:
    """The faces of `<data_dir>/<split>.npz` that can be learnt from."""
    path = Path(data_dir) / f"{split}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"No {split} split at {path}")
    with np.load(path) as archive:
        classes = tuple(str(name) for name in archive["classes"])
        if classes != EMOTIONS:
            raise ValueError(f"{path} has classes {classes}, expected {EMOTIONS}")
        contents = {name: archive[name] for name in archive.files}
    images, labels = contents["images"], contents["labels"].astype("int32")
    if images.shape[1:] != (FACE_SIZE, FACE_SIZE):
        raise ValueError(f"{path} holds {images.shape[1:]} images, expected 48x48")
    original = contents.get("fer2013_label")
    keep = learnable(contents)
    if "votes" in contents:
        votes = contents["votes"].astype("float32")  # (N, 7)
        targets = votes / votes.sum(axis=1, keepdims=True).clip(min=1)
    else:
        targets = one_hot(labels.clip(min=0))
    return Split(
        images=images[keep],
        labels=labels[keep],
        targets=targets[keep].astype("float32"),
        original_labels=None if original is None else original[keep].astype("int32"),
        has_votes="votes" in contents,
    )


def learnable(fields: dict) -> np.ndarray:
    """(N,) bool: the faces of an archive's fields that can be learnt from. With FER+ votes: those
    with a vote for one of our emotions that most annotators did not call unknown or not a face;
    else those with a label."""
    if "votes" not in fields:
        return fields["labels"] >= 0
    keep = fields["votes"].sum(axis=1) > 0
    if "all_votes" in fields:
        columns = [str(name) for name in fields["vote_columns"]]
        all_votes = fields["all_votes"].astype("int32")  # (N, 10)
        unreadable = all_votes[:, [columns.index(name) for name in UNREADABLE_VOTES]].sum(axis=1)
        keep &= 2 * unreadable <= all_votes.sum(axis=1)
    return keep


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(len(EMOTIONS), dtype="float32")[labels]


def label_targets(faces: Split, recipe: Recipe) -> np.ndarray:
    """(N, 7) float32: the faces' own targets, blended with their original FER2013 labels by
    original_label_weight where the archive has both."""
    if not recipe.original_label_weight or faces.original_labels is None or not faces.has_votes:
        return faces.targets
    weight = recipe.original_label_weight
    return ((1.0 - weight) * faces.targets + weight * one_hot(faces.original_labels)).astype("float32")


def training_targets(faces: Split, recipe: Recipe) -> np.ndarray:
    """(N, 7) float32 targets: label_targets, blended with the teachers' softened answers
    (softmax of logits / distill_temperature, averaged over teachers and the mirrored faces)."""
    targets = label_targets(faces, recipe)
    if not recipe.teachers:
        return targets
    import keras

    from emotion.training.evaluate import predict_logits, softmax

    answers = []
    for path in recipe.teachers:
        teacher = keras.saving.load_model(path, compile=False)
        for images in (faces.images, faces.images[:, :, ::-1]):
            answers.append(softmax(predict_logits(teacher, images) / recipe.distill_temperature))
    answer = np.mean(answers, axis=0)
    agreement = (answer.argmax(1) == targets.argmax(1)).mean()
    logger.info("The teachers' answer agrees with %.4f of the targets' top emotions", agreement)
    return ((1.0 - recipe.distill_weight) * targets + recipe.distill_weight * answer).astype("float32")


def choose_precision(requested: str) -> str:
    """bfloat16 where the hardware runs it natively (GPUs, AVX512-BF16/AMX CPUs), else float32."""
    if requested != "auto":
        return requested
    if gpu_available():
        return "mixed_bfloat16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "mixed_bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def gpu_available() -> bool:
    """Whether Keras's backend (TensorFlow, JAX or PyTorch) will train on a GPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def compile_model(recipe: Recipe, steps_per_epoch: int, prior: np.ndarray):
    import keras

    from emotion.training.losses import AdjustedCrossEntropy
    from emotion.training.model import build_model

    model = build_model(**recipe.architecture(), augmentation=recipe.augmentation())
    warmup_steps = recipe.warmup_epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(1, recipe.epochs * steps_per_epoch - warmup_steps),
        warmup_target=recipe.peak_learning_rate,
        warmup_steps=warmup_steps,
    )
    optimizer = keras.optimizers.SGD(
        learning_rate=schedule,
        momentum=recipe.momentum,
        nesterov=True,
        weight_decay=recipe.weight_decay,
    )
    model.compile(
        optimizer=optimizer,
        loss=AdjustedCrossEntropy(
            offsets=(recipe.logit_adjustment * np.log(prior)).tolist(),
            label_smoothing=recipe.label_smoothing,
        ),
        metrics=["accuracy"],
    )
    return model


FINISH_SECONDS = 30  # after the last epoch: calibrate on val and write the model


def epochs_within(seconds: float, recipe: Recipe, faces: Split, targets: np.ndarray) -> int:
    """How many epochs of `recipe` fit in `seconds` here, from a few timed steps of a throw-away model.

    The first steps compile; the real model compiles again, which the count leaves time for.
    """
    import keras

    started = time.perf_counter()
    model = compile_model(recipe, 1, targets.mean(axis=0))
    images = as_model_input(faces.images[: recipe.batch_size])
    for _ in range(3):
        model.train_on_batch(images, targets[: recipe.batch_size])
    compile_seconds = time.perf_counter() - started
    steps = 20
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, targets[: recipe.batch_size])
    step_seconds = (time.perf_counter() - started) / steps
    keras.backend.clear_session()
    # An epoch's steps, plus a tenth for scoring val and saving the checkpoints.
    epoch_seconds = 1.1 * step_seconds * math.ceil(len(faces.images) / recipe.batch_size)
    left = seconds - compile_seconds - FINISH_SECONDS
    epochs = max(1, int(left / epoch_seconds))
    logger.info(
        "%.1f ms a step, %.1f s an epoch: %d epochs in %.0f s",
        1e3 * step_seconds,
        epoch_seconds,
        epochs,
        left,
    )
    return epochs


def head(faces: Split, count: int) -> Split:
    """The first `count` faces of a split (smoke tests)."""
    return faces._replace(
        **{name: value[:count] for name, value in faces._asdict().items() if isinstance(value, np.ndarray)}
    )


def train(
    data_dir: Path,
    out_path: Path,
    checkpoint_dir: Path,
    recipe: Recipe,
    resume: bool = False,
    limit: int | None = None,
    precision: str = "auto",
    time_budget: float | None = None,
    train_more: bool = True,
) -> dict:
    """Train (or continue), select on val, calibrate, write `out_path`; return its metrics.

    `resume` continues the recipe saved in `checkpoint_dir` (or only writes the model, when
    its last epoch is done); with `train_more=False` too, it writes the model from the best
    epoch so far of a run that was stopped. `time_budget` (seconds, counted from the call) replaces
    recipe.epochs with as many epochs as fit in it here; the recipe saved with the model
    records the number, so the run can be repeated without it.
    """
    started = time.perf_counter()
    import keras

    from emotion.training import augment, losses  # noqa: F401  (register the layer and loss checkpoints hold)
    from emotion.training.checkpoints import RunFolder

    train_faces, val_faces = load_split(data_dir, "train"), load_split(data_dir, "val")
    if limit:
        train_faces, val_faces = head(train_faces, limit), head(val_faces, limit)
    run = RunFolder.open(checkpoint_dir, asdict(recipe), resume)
    recipe = recipe_from_dict(run.recipe)
    prior = label_targets(train_faces, recipe).mean(axis=0)  # (7,) the training targets' class shares
    precision = choose_precision(precision)
    keras.mixed_precision.set_global_policy(precision)

    if run.epoch == 0 or (train_more and run.epoch < recipe.epochs):
        targets = training_targets(train_faces, recipe)
        if run.epoch == 0 and time_budget is not None:
            left = time_budget - (time.perf_counter() - started)
            recipe = dataclasses.replace(recipe, epochs=epochs_within(left, recipe, train_faces, targets))
            run.recipe = asdict(recipe)
        fit(run, recipe, train_faces, targets, val_faces, prior, precision)
    return write_model(run, recipe, len(train_faces.images), val_faces, prior, out_path)


def fit(
    run: RunFolder,
    recipe: Recipe,
    faces: Split,
    targets: np.ndarray,
    val_faces: Split,
    prior: np.ndarray,
    precision: str,
) -> None:
    """Train the run from its last epoch to recipe.epochs, scoring val and saving the run after
    every epoch."""
    import keras

    from emotion.training.checkpoints import ScoreOnVal

    keras.utils.set_random_seed(recipe.seed)
    if run.epoch:
        model = keras.saving.load_model(run.last_path)
    else:
        model = compile_model(recipe, math.ceil(len(faces.images) / recipe.batch_size), prior)
        if recipe.init_from:
            model.set_weights(keras.saving.load_model(recipe.init_from, compile=False).get_weights())
            logger.info("Starting from the weights of %s", recipe.init_from)
        run.log_path.unlink(missing_ok=True)
    logger.info("Training %d epochs with %s precision on %d faces", recipe.epochs, precision, len(targets))
    model.fit(
        as_model_input(faces.images),  # the model augments it
        targets,
        batch_size=recipe.batch_size,
        shuffle=True,
        epochs=recipe.epochs,
        initial_epoch=run.epoch,
        callbacks=[ScoreOnVal(run, val_faces), keras.callbacks.CSVLogger(str(run.log_path), append=True)],
        verbose=2,
    )


def write_model(
    run: RunFolder, recipe: Recipe, train_images: int, val_faces: Split, prior: np.ndarray, out_path: Path
) -> dict:
    """Write the shipped model from the run's best epoch (finish), with its runtime, metrics and
    learning curves beside it; return its metrics."""
    import keras

    from emotion.model_file import convert_to_tflite, save_model
    from emotion.training.evaluate import evaluate_classifier

    final, metrics = finish(run.best_path, recipe, val_faces, prior)
    metrics.update(epochs_trained=run.epoch, best_epoch=run.best_epoch, train_images=train_images)
    runtime = None
    if keras.backend.backend() == "tensorflow":  # the converter takes TensorFlow models only
        from emotion.classifier import EmotionClassifier

        runtime = convert_to_tflite(final)
        metrics["runtime"] = evaluate_classifier(EmotionClassifier(runtime, {}, out_path), val_faces)
    save_model(final, out_path, recipe=asdict(recipe), metrics=metrics, runtime=runtime)
    shutil.copyfile(run.log_path, out_path.with_name("training_log.csv"))  # the learning curves, for the card
    metrics["file_size_bytes"] = out_path.stat().st_size
    return metrics


def finish(checkpoint: Path, recipe: Recipe, val_faces: Split, prior: np.ndarray):
    """The shipped float32 model made from a checkpoint, and its figures on val.

    A prior correction (logits - tau * log(prior), tau fitted on val, 0 where it does not pay)
    is added to the last layer's bias; a temperature fitted to val's targets is baked in after it.
    """
    import keras

    from emotion.training.evaluate import (
        evaluate_model,
        fit_prior_correction,
        fit_temperature,
        predict_logits,
    )
    from emotion.training.model import build_model

    keras.mixed_precision.set_global_policy("float32")  # the shipped model runs anywhere
    trained = keras.saving.load_model(checkpoint, compile=False)
    corrected = build_model(**recipe.architecture())
    corrected.set_weights(trained.get_weights())
    logits = predict_logits(corrected, val_faces.images)
    tau = fit_prior_correction(logits, val_faces.labels, prior)
    logits_layer = corrected.get_layer("logits")
    kernel, bias = logits_layer.get_weights()
    logits_layer.set_weights([kernel, bias - tau * np.log(prior)])
    logits = logits - tau * np.log(prior)
    temperature = fit_temperature(logits, val_faces.targets)
    final = build_model(**recipe.architecture(), temperature=temperature)
    final.set_weights(corrected.get_weights())
    metrics = evaluate_model(final, val_faces, uncalibrated_logits=logits)
    metrics.update(
        temperature=temperature,
        prior_correction=tau,
        training_prior=[float(share) for share in prior],
        parameters=int(final.count_params()),
    )
    return final, metrics


def recipe_from_dict(values: dict) -> Recipe:
    """The Recipe saved as JSON (lists back to tuples)."""
    return Recipe(
        **{name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}
    )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m emotion.training", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with train.npz and val.npz")
    parser.add_argument("--out", type=Path, default=Path("model/emotion_cnn.keras"))
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="git-ignored")
    parser.add_argument("--metrics", type=Path, help="where to write metrics JSON (default: beside --out)")
    parser.add_argument("--limit", type=int, help="use only the first N faces of each split (smoke tests)")
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "mixed_bfloat16"])
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the recipe saved in --checkpoints (its options are ignored)",
    )
    parser.add_argument(
        "--finish",
        action="store_true",
        help="write the model from the best epoch in --checkpoints; train no more",
    )
    parser.add_argument(
        "--time-budget", type=float, help="seconds: train as many epochs as fit (replaces --epochs)"
    )
    recipe = parser.add_argument_group("recipe (saved with the model)")
    hints = typing.get_type_hints(Recipe)
    for recipe_field in dataclasses.fields(Recipe):
        recipe.add_argument(
            "--" + recipe_field.name.replace("_", "-"),
            type=_parser_for(hints[recipe_field.name]),
            default=recipe_field.default,
            help=recipe_field.metadata["help"] + " (default: %(default)s)",
        )
    return parser.parse_args(argv)


def _parser_for(hint):
    """Turns an option's text into a value of a Recipe field's type: tuples are comma-separated."""
    if typing.get_origin(hint) is tuple:
        (item, _ellipsis) = typing.get_args(hint)
        return lambda text: tuple(item(part) for part in text.split(",") if part)
    optional = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return optional[0] if optional else hint


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    recipe = Recipe(
        **{recipe_field.name: getattr(args, recipe_field.name) for recipe_field in dataclasses.fields(Recipe)}
    )
    metrics = train(
        args.data,
        args.out,
        args.checkpoints,
        recipe,
        resume=args.resume or args.finish,
        train_more=not args.finish,
        limit=args.limit,
        precision=args.precision,
        time_budget=args.time_budget,
    )
    metrics_path = args.metrics or args.out.with_name("metrics.json")
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info(
        "val accuracy %.4f, mean recall %.4f (flip-averaged %.4f, %.4f); wrote %s and %s",
        metrics["val_accuracy"],
        metrics["val_mean_recall"],
        metrics["val_accuracy_flip"],
        metrics["val_mean_recall_flip"],
        args.out,
        metrics_path,
    )


if __name__ == "__main__":
    main()
