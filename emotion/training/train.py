"""Train the emotion CNN on FER2013 and write the shipped model.

    python -m emotion.training --data ../shared/data/fer2013 --out model/emotion_cnn.keras

It trains with whichever Keras backend is set (KERAS_BACKEND: TensorFlow by default, or JAX or
PyTorch on a GPU machine); augmentation is a layer of the model, so it runs on the same device.
Every epoch writes `last.keras` (with optimizer state) and a CSV row to --checkpoints;
`--resume` continues from there. Selection is on val accuracy only; a softmax temperature is
then fitted on val and baked into the written model together with its metadata.

With `--teacher` (repeatable) the targets are soft: each training face's label blended with
what the teacher models, averaged over them and over the mirrored face, say about it
(knowledge distillation, Hinton et al., 2015).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from emotion.labels import EMOTIONS, FACE_SIZE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights, saved into the model's metadata."""

    epochs: int = 100
    batch_size: int = 128
    peak_learning_rate: float = 0.05  # SGD with Nesterov momentum, cosine decay
    warmup_epochs: int = 2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    widths: tuple[int, ...] = (32, 64, 128, 256)
    convs_per_stage: int = 2
    dense_units: int = 256
    dropout: float = 0.4
    max_rotation_deg: float = 10.0
    max_zoom: float = 0.1  # scale drawn from [1 - max_zoom, 1 + max_zoom]
    max_shift_px: float = 4.0
    erase_probability: float = 0.5  # random erasing: a rectangle of noise over part of the face
    max_erase_area: float = 0.25  # its area, drawn from [0.02, max_erase_area] of the image
    seed: int = 1337
    init_from: str | None = None  # start from this model's weights (a warm restart) instead of at random
    teachers: tuple[str, ...] = ()  # models whose averaged answers become part of the targets
    distill_weight: float = 0.7  # share of the teachers' answer in each target, the rest is the label
    distill_temperature: float = 2.0  # softens the teachers' answers: softmax(logits / T)

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


def load_split(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 48, 48) uint8 images and (N,) int labels from `<data_dir>/<split>.npz`."""
    path = Path(data_dir) / f"{split}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"No {split} split at {path}")
    with np.load(path) as archive:
        classes = tuple(str(name) for name in archive["classes"])
        if classes != EMOTIONS:
            raise ValueError(f"{path} has classes {classes}, expected {EMOTIONS}")
        images, labels = archive["images"], archive["labels"].astype("int32")
    if images.shape[1:] != (FACE_SIZE, FACE_SIZE):
        raise ValueError(f"{path} holds {images.shape[1:]} images, expected 48x48")
    return images, labels


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(len(EMOTIONS), dtype="float32")[labels]


def training_targets(images: np.ndarray, labels: np.ndarray, recipe: Recipe) -> np.ndarray:
    """(N, 7) float32 targets: the one-hot labels, blended with the teachers' softened answers
    (softmax of logits / distill_temperature, averaged over teachers and the mirrored faces)."""
    if not recipe.teachers:
        return one_hot(labels)
    import keras

    from emotion.training.evaluate import predict_logits, softmax

    answers = []
    for path in recipe.teachers:
        teacher = keras.saving.load_model(path, compile=False)
        for faces in (images, images[:, :, ::-1]):
            answers.append(softmax(predict_logits(teacher, faces) / recipe.distill_temperature))
    answer = np.mean(answers, axis=0)
    logger.info("The teachers agree with %.4f of the training labels", (answer.argmax(1) == labels).mean())
    blended = (1.0 - recipe.distill_weight) * one_hot(labels) + recipe.distill_weight * answer
    return blended.astype("float32")


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


def compile_model(recipe: Recipe, steps_per_epoch: int):
    import keras

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
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy"],
    )
    return model


def train(
    data_dir: Path,
    out_path: Path,
    checkpoint_dir: Path,
    recipe: Recipe,
    resume: bool = False,
    limit: int | None = None,
    precision: str = "auto",
) -> dict:
    """Train (or continue), select on val, calibrate, write `out_path`; return its metrics."""
    import keras

    from emotion.training import augment  # noqa: F401  (registers the Augment layer that checkpoints hold)
    from emotion.training.evaluate import evaluate_model, fit_temperature, predict_logits
    from emotion.training.model import build_model
    from emotion.model_file import save_atomically, save_model

    keras.utils.set_random_seed(recipe.seed)
    train_images, train_labels = load_split(data_dir, "train")
    val_images, val_labels = load_split(data_dir, "val")
    if limit:
        train_images, train_labels = train_images[:limit], train_labels[:limit]
        val_images, val_labels = val_images[:limit], val_labels[:limit]

    precision = choose_precision(precision)
    keras.mixed_precision.set_global_policy(precision)
    logger.info("Training with %s precision on %d images", precision, len(train_images))

    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = checkpoint_dir / "last.keras", checkpoint_dir / "best.keras"
    state_path, log_path = checkpoint_dir / "state.json", checkpoint_dir / "log.csv"
    steps_per_epoch = math.ceil(len(train_images) / recipe.batch_size)

    state = {"epoch": 0, "best_val_accuracy": -1.0, "recipe": asdict(recipe)}
    if resume and last_path.is_file() and state_path.is_file():
        state = json.loads(state_path.read_text())
        if state["recipe"] != json.loads(json.dumps(asdict(recipe))):
            raise ValueError(f"{checkpoint_dir} was trained with another recipe: {state['recipe']}")
        model = keras.saving.load_model(last_path)
        logger.info("Resuming after epoch %d", state["epoch"])
    else:
        if resume:
            logger.warning("Nothing to resume in %s: starting afresh", checkpoint_dir)
        model = compile_model(recipe, steps_per_epoch)
        if recipe.init_from:
            model.set_weights(keras.saving.load_model(recipe.init_from, compile=False).get_weights())
            logger.info("Starting from the weights of %s", recipe.init_from)
        log_path.unlink(missing_ok=True)

    class Checkpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            state["epoch"] = epoch + 1
            save_atomically(self.model, last_path)
            if logs["val_accuracy"] > state["best_val_accuracy"]:
                state["best_val_accuracy"] = float(logs["val_accuracy"])
                save_atomically(self.model, best_path)
            state_path.write_text(json.dumps(state, indent=2))

    if state["epoch"] < recipe.epochs:
        model.fit(
            train_images[..., None].astype("float32"),  # (N, 48, 48, 1); the model augments it
            training_targets(train_images, train_labels, recipe),
            batch_size=recipe.batch_size,
            shuffle=True,
            validation_data=(val_images[..., None].astype("float32"), one_hot(val_labels)),
            epochs=recipe.epochs,
            initial_epoch=state["epoch"],
            callbacks=[Checkpoint(), keras.callbacks.CSVLogger(str(log_path), append=True)],
            verbose=2,
        )

    # Rebuild in float32 so the shipped model runs anywhere, then calibrate on val.
    keras.mixed_precision.set_global_policy("float32")
    trained = keras.saving.load_model(best_path, compile=False)
    uncalibrated = build_model(**recipe.architecture())
    uncalibrated.set_weights(trained.get_weights())
    val_logits = predict_logits(uncalibrated, val_images)
    temperature = fit_temperature(val_logits, val_labels)
    final = build_model(**recipe.architecture(), temperature=temperature)
    final.set_weights(trained.get_weights())

    metrics = evaluate_model(final, val_images, val_labels, uncalibrated_logits=val_logits)
    metrics.update(
        temperature=temperature,
        epochs_trained=state["epoch"],
        train_images=len(train_images),
        parameters=int(final.count_params()),
    )
    save_model(final, out_path, recipe=asdict(recipe), metrics=metrics)
    shutil.copyfile(log_path, out_path.with_name("training_log.csv"))  # the learning curves, for the card
    metrics["file_size_bytes"] = out_path.stat().st_size
    return metrics


def parse_args(argv=None) -> argparse.Namespace:
    defaults = Recipe()
    parser = argparse.ArgumentParser(prog="python -m emotion.training", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with train.npz and val.npz")
    parser.add_argument("--out", type=Path, default=Path("model/emotion_cnn.keras"))
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="git-ignored")
    parser.add_argument("--metrics", type=Path, help="where to write metrics JSON (default: beside --out)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=defaults.peak_learning_rate,
        help="peak of the warm-up + cosine schedule",
    )
    parser.add_argument("--warmup-epochs", type=int, default=defaults.warmup_epochs)
    parser.add_argument(
        "--widths",
        type=lambda text: tuple(int(width) for width in text.split(",")),
        default=defaults.widths,
        help="filters of each stage, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--dense-units", type=int, default=defaults.dense_units)
    parser.add_argument(
        "--erase-probability",
        type=float,
        default=defaults.erase_probability,
        help="share of training faces given a rectangle of noise (random erasing); 0: none",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--init", type=Path, help="start from this model's weights (same architecture)")
    parser.add_argument(
        "--teacher",
        type=Path,
        action="append",
        default=[],
        help="a trained model whose answers are blended into the targets (repeatable: their mean)",
    )
    parser.add_argument("--distill-weight", type=float, default=defaults.distill_weight)
    parser.add_argument("--distill-temperature", type=float, default=defaults.distill_temperature)
    parser.add_argument("--limit", type=int, help="use only the first N images of each split (smoke tests)")
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "mixed_bfloat16"])
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoints/last.keras")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    recipe = Recipe(
        epochs=args.epochs,
        batch_size=args.batch_size,
        peak_learning_rate=args.learning_rate,
        warmup_epochs=args.warmup_epochs,
        widths=args.widths,
        dense_units=args.dense_units,
        erase_probability=args.erase_probability,
        seed=args.seed,
        init_from=str(args.init) if args.init else None,
        teachers=tuple(str(path) for path in args.teacher),
        distill_weight=args.distill_weight,
        distill_temperature=args.distill_temperature,
    )
    metrics = train(
        args.data,
        args.out,
        args.checkpoints,
        recipe,
        resume=args.resume,
        limit=args.limit,
        precision=args.precision,
    )
    metrics_path = args.metrics or args.out.with_name("metrics.json")
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info(
        "val accuracy %.4f (flip-averaged %.4f); wrote %s and %s",
        metrics["val_accuracy"],
        metrics["val_accuracy_flip"],
        args.out,
        metrics_path,
    )


if __name__ == "__main__":
    main()
