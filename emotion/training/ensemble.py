"""Join trained models into one: their trunks side by side, one linear head over their features.

    python -m emotion.training.ensemble --data ../shared/data/ferplus \\
        --member model/emotion_cnn.keras --member previous.keras \\
        --posed ../shared/data/posed/ckplus_dev.npz --out model/emotion_cnn.keras

Each member's trunk (all its layers up to its last hidden one) reads the face; one Dense layer
over all their features gives the logits, then a temperature and the softmax, as in a single
model. The result is one Keras model, written with its metadata and its int8 runtime like any
trained model, so every loader reads it as it is.

The head is set in one of two ways:
- `average`: the members' own last layers, their logits averaged with weights (no training);
- `retrain`: decoupled classifier retraining (Kang et al., ICLR 2020): the trunks stay as they
  are and only the head is fitted, from the averaged members' last layers, on the features of the
  training faces and of their mirror images, to the vote shares blended with the faces' original
  FER2013 labels (--original-label-weight), each face weighted by its target class's share of
  the training faces to the power -balance (0: as they come, 1: every class alike).

Then a prior correction, logits - tau * log(training prior), is baked into the head's bias, and
a temperature fitted to val's vote shares is baked in after it. The member weights (average) and
tau are chosen on a grid: among the candidates whose val accuracy is within --accuracy-kept of the
first member's, the one with the best val mean per-class recall, plus, with --posed (a labelled
set of posed faces, used only to choose, never to fit), the posed faces' accuracy and mean
per-class recall, and the same of --acted (faces of people acting at a camera, as the pipeline
cuts them from video frames: `scripts/measure_model.py --save-crops`). With --class-offsets, one
more logit offset per emotion is chosen the same way (by coordinate ascent); seven numbers fitted
to val fit it better than new faces, so leave --accuracy-kept a margin. The features come from
each trunk's int8 conversion, as the app runs it; --cache keeps them between runs.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from emotion.labels import EMOTIONS
from emotion.training.evaluate import (
    ACCURACY_KEPT,
    as_model_input,
    fit_temperature,
    recall_figures,
    softmax,
)
from emotion.training.train import Recipe, Split, label_targets, load_split

logger = logging.getLogger(__name__)

FEATURE_LAYER = "relu_dense"  # each member's last hidden layer: what its own last layer reads
WEIGHT_GRID = np.round(np.arange(0.0, 1.001, 0.1), 2)  # the first member's share, `average`
TAU_GRID = np.round(np.arange(0.0, 1.001, 0.05), 2)  # strengths of the prior correction
OFFSET_GRID = np.round(np.arange(-1.5, 1.501, 0.1), 1)  # steps of the per-emotion logit offsets
OFFSET_SWEEPS = 3
HEAD_EPOCHS = 30
HEAD_BATCH = 512
HEAD_LEARNING_RATE = 1e-3


@dataclass(frozen=True)
class HeadRecipe:
    """How the head is set; saved in the model's metadata."""

    head: str = "retrain"  # "average" or "retrain"
    original_label_weight: float = 0.0  # retrain: share of the original FER2013 label in each target
    balance: float = 0.0  # retrain: sample weight = (class share) ** -balance
    class_offsets: bool = False  # after the prior correction, one more logit offset per emotion
    accuracy_kept: float = ACCURACY_KEPT  # val accuracy a choice may lose against the first member's
    seed: int = 1337


class Candidate:
    """One head on the members' features: logits = features @ kernel + bias."""

    def __init__(self, kernel: np.ndarray, bias: np.ndarray, description: dict):
        self.kernel, self.bias, self.description = kernel, bias, description

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features @ self.kernel + self.bias

    def corrected(self, tau: float, prior: np.ndarray) -> Candidate:
        """The prior correction: logits - tau * log(prior)."""
        description = {**self.description, "tau": float(tau)}
        return Candidate(self.kernel, self.bias - tau * np.log(prior), description)

    def shifted(self, offsets: np.ndarray) -> Candidate:
        """Each emotion's logit moved by its offset."""
        description = {**self.description, "offsets": [round(float(value), 2) for value in offsets]}
        return Candidate(self.kernel, self.bias + offsets, description)


def trunk(model, name: str):
    """The member's layers up to FEATURE_LAYER, as a model of its own: (N, 48, 48, 1) -> (N, F)."""
    import keras

    return keras.Model(model.inputs, model.get_layer(FEATURE_LAYER).output, name=name)


def runtime_outputs(runtime: bytes, images: np.ndarray, threads: int, batch_size: int = 256) -> np.ndarray:
    """(N, 48, 48) uint8 -> the TensorFlow Lite model's (N, ...) float32 output."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=runtime, num_threads=threads)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].astype("float32")[..., None]
        interpreter.resize_tensor_input(input_index, batch.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_index).copy())
    return np.concatenate(outputs)


class Features:
    """The members' features of sets of faces, from each trunk's int8 runtime, cached by content."""

    def __init__(self, members: list, cache: Path | None, threads: int):
        from emotion.model_file import convert_to_tflite

        self.runtimes = [
            convert_to_tflite(trunk(member, f"member{index}")) for index, member in enumerate(members)
        ]
        self.cache, self.threads = cache, threads

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, 48, 48) uint8 -> (N, sum of the members' feature widths) float32."""
        return np.concatenate([self._one(runtime, images) for runtime in self.runtimes], axis=1)

    def _one(self, runtime: bytes, images: np.ndarray) -> np.ndarray:
        if self.cache is None:
            return runtime_outputs(runtime, images, self.threads)
        key = hashlib.sha256(runtime + np.ascontiguousarray(images).tobytes()).hexdigest()[:24]
        path = self.cache / f"{key}.npy"
        if path.is_file():
            return np.load(path)
        features = runtime_outputs(runtime, images, self.threads)
        self.cache.mkdir(parents=True, exist_ok=True)
        np.save(path, features)
        return features


def member_heads(members: list) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each member's own last layer: (kernel (F, 7), bias (7,))."""
    return [
        tuple(w.astype("float64") for w in member.get_layer("logits").get_weights()) for member in members
    ]


def averaged_head(heads: list, weights: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The head over the joined features whose logits are the weighted mean of the members' logits."""
    kernel = np.concatenate([weight * kernel for weight, (kernel, _bias) in zip(weights, heads, strict=True)])
    bias = sum(weight * bias for weight, (_kernel, bias) in zip(weights, heads, strict=True))
    return kernel, bias


def retrained_head(
    features: np.ndarray, targets: np.ndarray, start: tuple[np.ndarray, np.ndarray], recipe: HeadRecipe
) -> tuple[np.ndarray, np.ndarray]:
    """The head fitted to (N, 7) targets on (N, F) features from `start`, balanced by recipe.balance."""
    import keras

    keras.utils.set_random_seed(recipe.seed)
    shares = np.bincount(targets.argmax(axis=1), minlength=len(EMOTIONS)) / len(targets)
    sample_weights = shares.clip(min=1e-6)[targets.argmax(axis=1)] ** -recipe.balance
    sample_weights /= sample_weights.mean()
    head = keras.Sequential([keras.Input((features.shape[1],)), keras.layers.Dense(len(EMOTIONS))])
    head.layers[0].set_weights([start[0].astype("float32"), start[1].astype("float32")])
    head.compile(
        optimizer=keras.optimizers.Adam(HEAD_LEARNING_RATE),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    head.fit(
        features, targets, sample_weight=sample_weights, batch_size=HEAD_BATCH, epochs=HEAD_EPOCHS, verbose=0
    )
    kernel, bias = head.layers[0].get_weights()
    return kernel.astype("float64"), bias.astype("float64")


class Judge:
    """Scores a head: its val mean per-class recall, plus each choosing set's (posed or acted
    faces) accuracy and mean per-class recall; minus infinity where its val accuracy is below
    `floor`."""

    def __init__(
        self, val: tuple[np.ndarray, Split], choosing: dict[str, tuple[np.ndarray, Split]], floor: float
    ):
        self.val, self.choosing, self.floor = val, choosing, floor

    def figures(self, candidate: Candidate) -> dict:
        (features, faces), row = self.val, dict(candidate.description)
        row["val"] = recall_figures(softmax(candidate.logits(features)), faces.labels)
        for name, (features, faces) in self.choosing.items():
            row[name] = recall_figures(softmax(candidate.logits(features)), faces.labels)
        return row

    def score(self, candidate: Candidate) -> float:
        row = self.figures(candidate)
        if row["val"]["accuracy"] < self.floor:
            return -np.inf
        return row["val"]["mean_recall"] + sum(
            row[name][key] for name in self.choosing for key in ("accuracy", "mean_recall")
        )


def with_class_offsets(candidate: Candidate, judge: Judge) -> Candidate:
    """The candidate with one more logit offset per emotion, found by coordinate ascent on
    OFFSET_GRID: each emotion's offset in turn moves to its best value, OFFSET_SWEEPS times."""
    offsets, best = np.zeros(len(EMOTIONS)), judge.score(candidate)
    for _sweep, emotion in itertools.product(range(OFFSET_SWEEPS), range(len(EMOTIONS))):
        for step in OFFSET_GRID:
            trial = offsets.copy()
            trial[emotion] += step
            score = judge.score(candidate.shifted(trial))
            if score > best + 1e-9:
                offsets, best = trial, score
    return candidate.shifted(offsets)


def build_ensemble(members: list, kernel: np.ndarray, bias: np.ndarray, temperature: float):
    """One Keras model: the members' trunks side by side, the head, the temperature, the softmax."""
    import keras
    from keras import layers

    from emotion.labels import FACE_SIZE

    inputs = keras.Input(shape=(FACE_SIZE, FACE_SIZE, 1), name="face")
    features = [trunk(member, f"member{index}")(inputs) for index, member in enumerate(members)]
    joined = layers.Concatenate(name="features")(features) if len(features) > 1 else features[0]
    logits = layers.Dense(len(EMOTIONS), name="logits", dtype="float32")(joined)
    scaled = layers.Rescaling(1.0 / temperature, name="temperature", dtype="float32")(logits)
    outputs = layers.Softmax(name="probabilities", dtype="float32")(scaled)
    model = keras.Model(inputs, outputs, name="emotion_ensemble")
    model.get_layer("logits").set_weights([kernel.astype("float32"), bias.astype("float32")])
    return model


def ensemble(
    data_dir: Path,
    member_paths: list[Path],
    out_path: Path,
    recipe: HeadRecipe,
    posed_path: Path | None = None,
    cache: Path | None = None,
    threads: int = 1,
    acted_path: Path | None = None,
) -> dict:
    """Join the members, set and choose the head, write `out_path`; return its metrics."""
    import keras

    from emotion.classifier import EmotionClassifier
    from emotion.model_file import convert_to_tflite, save_model
    from emotion.training.evaluate import evaluate_classifier, evaluate_model

    members = [keras.saving.load_model(path, compile=False) for path in member_paths]
    train_faces, val_faces = load_split(data_dir, "train"), load_split(data_dir, "val")
    # The sets that choose the head besides val, by the name their figures are stored under.
    choosing_faces = {
        name: load_split(path.parent, path.stem)
        for name, path in (("posed", posed_path), ("acted", acted_path))
        if path is not None
    }
    features = Features(members, cache, threads)
    val = (features(val_faces.images), val_faces)
    choosing = {name: (features(faces.images), faces) for name, faces in choosing_faces.items()}
    prior = train_faces.targets.mean(axis=0)  # (7,) the vote shares of the training faces
    heads = member_heads(members)

    if recipe.head == "average":
        shares = [(weight, round(1.0 - weight, 2)) for weight in WEIGHT_GRID] if len(members) == 2 else [None]
        bases = [
            Candidate(
                *averaged_head(heads, list(weights or [1.0 / len(members)] * len(members))),
                {"weights": weights},
            )
            for weights in shares
        ]
    else:
        # The features of the training faces and their mirror images; targets as the trainer makes them.
        train_features = np.concatenate(
            [features(train_faces.images), features(train_faces.images[:, :, ::-1])]
        )
        blended = label_targets(train_faces, Recipe(original_label_weight=recipe.original_label_weight))
        targets = np.concatenate([blended, blended])
        start = averaged_head(heads, [1.0 / len(members)] * len(members))
        bases = [Candidate(*retrained_head(train_features, targets, start, recipe), {})]
    alone = Candidate(*averaged_head(heads, [1.0] + [0.0] * (len(members) - 1)), {})
    first_member = recall_figures(softmax(alone.logits(val[0])), val_faces.labels)
    judge = Judge(val, choosing, floor=first_member["accuracy"] - recipe.accuracy_kept)
    # Each base (member weights) at its best prior correction; with offsets, each of those with
    # its own offsets, since the best offsets of one weighting need not suit another.
    candidates = [max((base.corrected(tau, prior) for tau in TAU_GRID), key=judge.score) for base in bases]
    if recipe.class_offsets:
        candidates = [
            with_class_offsets(candidate, judge) if judge.score(candidate) > -np.inf else candidate
            for candidate in candidates
        ]
    chosen = max(candidates, key=judge.score)
    if judge.score(chosen) == -np.inf:  # max kept the first of them
        logger.warning(
            "No head keeps val accuracy within %s of the first member's: kept the first tried, uncorrected",
            recipe.accuracy_kept,
        )
    logits = chosen.logits(val[0])
    temperature = fit_temperature(logits, val_faces.targets)
    logger.info("Chose %s, temperature %.3f", json.dumps(judge.figures(chosen)), temperature)

    final = build_ensemble(members, chosen.kernel, chosen.bias, temperature)
    metrics = evaluate_model(final, val_faces, uncalibrated_logits=logits)
    runtime = convert_to_tflite(final)
    classifier = EmotionClassifier(runtime, {}, out_path)
    metrics["runtime"] = evaluate_classifier(classifier, val_faces)
    for name, faces in choosing_faces.items():  # their figures, of the Keras model and of its runtime
        keras_answers = final.predict(as_model_input(faces.images), verbose=0)
        for figures, answers in (
            (metrics, keras_answers),
            (metrics["runtime"], classifier.predict_proba(faces.images)),
        ):
            figures[name] = {**recall_figures(answers, faces.labels), "images": len(faces.labels)}
    metrics.update(
        temperature=temperature,
        prior_correction=chosen.description["tau"],
        training_prior=[float(share) for share in prior],
        parameters=int(final.count_params()),
        train_images=len(train_faces.images),
    )
    ensemble_recipe = {
        "members": [
            {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
            for path in member_paths
        ],
        **asdict(recipe),
        **chosen.description,
    }
    save_model(final, out_path, recipe={"ensemble": ensemble_recipe}, metrics=metrics, runtime=runtime)
    metrics["file_size_bytes"] = out_path.stat().st_size
    return metrics


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(
        prog="python -m emotion.training.ensemble", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", type=Path, required=True, help="folder with train.npz and val.npz")
    parser.add_argument(
        "--member", type=Path, action="append", required=True, help="a model file (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=Path("model/emotion_cnn.keras"))
    parser.add_argument("--metrics", type=Path, help="where to write metrics JSON (default: beside --out)")
    parser.add_argument(
        "--posed", type=Path, help="an .npz of labelled posed faces, to choose with (never to fit)"
    )
    parser.add_argument(
        "--acted",
        type=Path,
        help="an .npz of faces acted at a camera as the pipeline cuts them, to choose with (never to fit)",
    )
    parser.add_argument("--cache", type=Path, help="folder that keeps the members' features between runs")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads of the runtime that reads the features"
    )
    parser.add_argument("--head", choices=["average", "retrain"], default=HeadRecipe.head)
    parser.add_argument("--original-label-weight", type=float, default=HeadRecipe.original_label_weight)
    parser.add_argument("--balance", type=float, default=HeadRecipe.balance)
    parser.add_argument(
        "--class-offsets", action="store_true", help="also choose one logit offset per emotion"
    )
    parser.add_argument("--accuracy-kept", type=float, default=HeadRecipe.accuracy_kept)
    parser.add_argument("--seed", type=int, default=HeadRecipe.seed)
    args = parser.parse_args(argv)
    recipe = HeadRecipe(
        head=args.head,
        original_label_weight=args.original_label_weight,
        balance=args.balance,
        class_offsets=args.class_offsets,
        accuracy_kept=args.accuracy_kept,
        seed=args.seed,
    )
    metrics = ensemble(
        args.data, args.member, args.out, recipe, args.posed, args.cache, args.threads, args.acted
    )
    metrics_path = args.metrics or args.out.with_name("metrics.json")
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    runtime = metrics["runtime"]
    logger.info(
        "runtime: val accuracy %.4f, mean recall %.4f%s; wrote %s and %s",
        runtime["val_accuracy"],
        runtime["val_mean_recall"],
        ", posed accuracy {accuracy:.4f}, mean recall {mean_recall:.4f}".format(**runtime["posed"])
        if "posed" in runtime
        else "",
        args.out,
        metrics_path,
    )


if __name__ == "__main__":
    main()
