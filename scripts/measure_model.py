"""One model file through the whole pipeline on the development sets: the yardstick for every variant.

    python scripts/measure_model.py --model model/emotion_cnn.keras --data ../shared/data

Prints, for each set, accuracy, mean per-class recall, the lowest emotion and the confusions
(rows: the true emotion, columns: the one read):
- FER+ val (`ferplus/val.npz`): the 48x48 crops into the classifier, against the FER+ majority;
  with the calibration error against the ten annotators' vote shares;
- CK+ dev (`posed/ckplus_dev.npz`): posed 48x48 crops into the classifier, as acted;
- KDEF-dyn dev (`posed/kdefdyn_dev/*.mp4`, people acting at a camera from neutral to a peak):
  the last frame (as acted) and the first frame (neutral) each through `analyze_image`, the
  photo pipeline with the default finder (the largest face; a frame with no face found counts
  as wrong); and each clip through the webcam path, `LiveAnalyzer` as the page's webcam runs it,
  with its last frame held for HOLD_S: the largest tracked face's emotion at the end.

`--save-crops FILE` writes the KDEF-dyn frames' crops, as the pipeline cut them (last frames
labelled as acted, first frames neutral), to an .npz for choosing offsets
(`python -m emotion.training.ensemble --posed FILE`). The dev sets may be used only to measure
and to choose: keep such a file outside the repository.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

from emotion import EMOTIONS, load_classifier
from emotion.faces import PHOTO_DETECTOR, crop_faces, detect_faces, to_gray
from emotion.live import LiveAnalyzer, LiveSettings
from emotion.pipeline import classify_faces
from emotion.training.evaluate import vote_calibration_error
from emotion.training.train import load_split

HOLD_S = 1.0  # seconds the clip's last frame is held in the webcam path: a person holding the peak
CLIP_FPS = 30  # the clips' frame rate
WEBCAM_CLASSIFY_EVERY = 2  # the page's webcam reads each face's emotion on every 2nd frame
# KDEF-dyn's emotion codes in the file names -> FER2013 order.
KDEF_CODES = {"AN": 0, "DI": 1, "FE": 2, "HA": 3, "SA": 4, "SU": 5}
NEUTRAL = EMOTIONS.index("neutral")
MISSED = -1  # the pipeline found no face: counted wrong


class Clip(NamedTuple):
    name: str
    label: int  # the acted emotion, FER2013 order
    frames: list[np.ndarray]  # RGB (H, W, 3) uint8


def read_clips(folder: Path) -> list[Clip]:
    clips = []
    for path in sorted(folder.glob("*.mp4")):
        code = path.stem.rsplit("-", 1)[-1]
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        clips.append(Clip(path.stem, KDEF_CODES[code], frames))
    return clips


def figures(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """Accuracy, mean recall over the emotions present, each one's recall and the confusions
    (one more column: no face found, which counts as wrong)."""
    confusion = np.zeros((len(EMOTIONS), len(EMOTIONS) + 1), dtype=int)
    np.add.at(confusion, (labels, np.where(predictions == MISSED, len(EMOTIONS), predictions)), 1)
    recall = {
        EMOTIONS[index]: float(confusion[index, index] / confusion[index].sum())
        for index in sorted(set(labels.tolist()))
    }
    lowest = min(recall, key=recall.get)
    return {
        "faces": len(labels),
        "missed": int((predictions == MISSED).sum()),
        "accuracy": float((predictions == labels).mean()),
        "mean_recall": float(np.mean(list(recall.values()))),
        "lowest": [lowest, recall[lowest]],
        "recall": recall,
        "confusion": confusion.tolist(),
    }


def photo_reading(classifier, rgb: np.ndarray) -> tuple[int, np.ndarray | None]:
    """The largest face's emotion index through the photo pipeline, and its crop; MISSED, None if none."""
    gray = to_gray(rgb)
    detections = detect_faces(gray, PHOTO_DETECTOR)
    if not detections:
        return MISSED, None
    face = classify_faces(gray, detections[:1], classifier)[0]
    return EMOTIONS.index(face.emotion), crop_faces(gray, detections[:1])[0]


def webcam_reading(classifier, clip: Clip) -> int:
    """The largest tracked face's emotion after the clip and HOLD_S of its last frame."""
    analyzer = LiveAnalyzer(classifier, LiveSettings(classify_every=WEBCAM_CLASSIFY_EVERY))
    frames = clip.frames + [clip.frames[-1]] * round(HOLD_S * CLIP_FPS)
    faces = []
    for index, rgb in enumerate(frames):
        _, faces = analyzer.process(np.ascontiguousarray(rgb[:, :, ::-1]), index / CLIP_FPS, draw=False)
    if not faces:
        return MISSED
    largest = max(faces, key=lambda face: face.box.area)
    return EMOTIONS.index(largest.emotion)


def measure(model: Path, data: Path, save_crops: Path | None = None) -> dict:
    classifier = load_classifier(model)
    results = {"model": str(model) if model else "the bundled model"}

    val = load_split(data / "ferplus", "val")
    probabilities = classifier.predict_proba(val.images)
    labelled = val.labels >= 0
    results["ferplus_val"] = {
        **figures(val.labels[labelled], probabilities[labelled].argmax(axis=1)),
        "vote_calibration_error": vote_calibration_error(probabilities, val.targets),
    }

    posed = np.load(data / "posed" / "ckplus_dev.npz")
    labels = posed["labels"].astype(int)
    results["ckplus_dev"] = figures(labels, classifier.predict_proba(posed["images"]).argmax(axis=1))

    clips = read_clips(data / "posed" / "kdefdyn_dev")
    labels = np.array([clip.label for clip in clips])
    last = [photo_reading(classifier, clip.frames[-1]) for clip in clips]
    first = [photo_reading(classifier, clip.frames[0]) for clip in clips]
    results["kdefdyn_last"] = figures(labels, np.array([reading for reading, _ in last]))
    results["kdefdyn_first"] = figures(
        np.full(len(clips), NEUTRAL), np.array([reading for reading, _ in first])
    )
    results["kdefdyn_webcam"] = figures(
        labels, np.array([webcam_reading(classifier, clip) for clip in clips])
    )

    if save_crops is not None:
        crops, crop_labels = [], []
        for (_, crop), label in [*zip(last, labels, strict=True), *((reading, NEUTRAL) for reading in first)]:
            if crop is not None:
                crops.append(crop)
                crop_labels.append(label)
        np.savez_compressed(
            save_crops,
            images=np.stack(crops),
            labels=np.array(crop_labels, np.uint8),
            classes=np.array(EMOTIONS),
        )
    return results


def print_results(results: dict) -> None:
    print(f"model: {results['model']}")
    print("| set | faces | missed | accuracy | mean recall | lowest |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, row in results.items():
        if isinstance(row, dict):
            lowest, recall = row["lowest"]
            print(
                f"| {name} | {row['faces']} | {row['missed']} | {row['accuracy']:.3f} | "
                f"{row['mean_recall']:.3f} | {lowest} {recall:.2f} |"
            )
    calibration = results["ferplus_val"]["vote_calibration_error"]
    print(f"FER+ val calibration error against the vote shares: {calibration:.3f}")
    for name, row in results.items():
        if isinstance(row, dict):
            print(
                f"\n{name}: recall "
                + ", ".join(f"{emotion} {value:.2f}" for emotion, value in row["recall"].items())
            )
            print("confusions (rows: true, columns: read, " + " ".join(EMOTIONS) + " none)")
            for emotion, counts in zip(EMOTIONS, row["confusion"], strict=True):
                if any(counts):
                    print(f"  {emotion:>8}: " + " ".join(f"{count:4d}" for count in counts))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model file (default: the bundled model)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="holds ferplus/ and posed/")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--save-crops", type=Path, help="write the KDEF-dyn frames' crops here (.npz)")
    args = parser.parse_args(argv)
    results = measure(args.model, args.data, args.save_crops)
    print_results(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
