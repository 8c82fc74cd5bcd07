"""Build the training data, `train.npz`, `val.npz` and `test.npz`, from FER2013's public files.

    python -m emotion.training.data --fer2013-csv fer2013.csv --ferplus ferplus --out data

Sources (the model card says where to get them); either or both:
- `--fer2013-csv`: Kaggle's `fer2013.csv`, one face per row: `emotion` (0-6, our class order),
  `pixels` (48x48 grey levels, space-separated) and `Usage`.
- `--ferplus`: a folder holding FER+'s `fer2013new.csv` (the votes of ten annotators for every
  row of fer2013.csv, row for row) and the image folders `FER2013Train`, `FER2013Valid` and
  `FER2013Test` that FER+'s `generate_training_data.py` writes from fer2013.csv.

FER2013's Usage Training, PublicTest and PrivateTest become train, val and test. Each archive
holds `images` (N, 48, 48) uint8, `labels` (N,) int8, `row` (N,) int32 (the face's row in
fer2013.csv, counted from 0 after the header) and `classes` (EMOTIONS).

With FER+, the faces are those FER+ kept (it left out rows that show no face), and:
- `labels` is FER+'s majority, by the rule of its own "majority" mode: votes of 1 are dropped as
  noise, and the emotion with the most votes is the label if it has more than half of the rest;
  -1 where none has, or where it is contempt, unknown or "not a face" (no class of ours);
- `votes` (N, 7) uint8: the votes for each of our classes, in `classes` order;
- `all_votes` (N, 10) uint8: every FER+ vote column, in `vote_columns` order;
- `fer2013_label` (N,) int8, when fer2013.csv is given too: the face's original label.
With fer2013.csv alone every row is kept, and `labels` and `fer2013_label` are its labels.

Bad input (a missing column, a short pixel row, an image of the wrong size, a vote row without
its image, two files that do not match) stops with InvalidData naming the file and the row;
the command then exits with status 2.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from emotion.labels import EMOTIONS, FACE_SIZE

SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}  # FER2013 Usage -> archive
FERPLUS_LABELS = "fer2013new.csv"
FERPLUS_FOLDERS = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}
VOTE_COLUMNS = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",  # not a face
)
# The FER+ column of each of our classes, in EMOTIONS order.
CLASS_COLUMNS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
NO_LABEL = -1
EXIT_BAD_INPUT = 2


class InvalidData(ValueError):
    """An input file is missing or malformed, or does not match the other one."""


class Fer2013(NamedTuple):
    """Every row of fer2013.csv, in its order."""

    images: np.ndarray  # (M, 48, 48) uint8
    labels: np.ndarray  # (M,) int8, index into EMOTIONS
    usage: np.ndarray  # (M,) str: Training, PublicTest or PrivateTest


class FerPlus(NamedTuple):
    """The rows of fer2013new.csv that have an image, in their order."""

    rows: np.ndarray  # (N,) int32, the same rows of fer2013.csv
    images: np.ndarray  # (N, 48, 48) uint8
    all_votes: np.ndarray  # (N, 10) uint8, in VOTE_COLUMNS order
    usage: np.ndarray  # (N,) str
    row_count: int  # rows in fer2013new.csv, with and without an image


def read_fer2013(path: Path) -> Fer2013:
    images, labels, usage = [], [], []
    for _, where, record in _records(path, ("emotion", "pixels", "Usage")):
        usage.append(_usage(record["Usage"], where))
        labels.append(_integer(record, "emotion", where, maximum=len(EMOTIONS) - 1))
        images.append(_pixels(record["pixels"], where))
    return Fer2013(_stack(images), np.array(labels, dtype=np.int8), np.array(usage))


def read_ferplus(folder: Path) -> FerPlus:
    rows, images, all_votes, usage = [], [], [], []
    row_count = 0
    for row, where, record in _records(folder / FERPLUS_LABELS, ("Usage", "Image name", *VOTE_COLUMNS)):
        row_count += 1
        row_usage = _usage(record["Usage"], where)
        votes = [_integer(record, column, where, maximum=255) for column in VOTE_COLUMNS]
        name = record["Image name"].strip()
        if not name:  # FER+ left this face out, mostly because it is not a face
            continue
        images.append(_image(folder / FERPLUS_FOLDERS[row_usage] / name, where))
        rows.append(row)
        all_votes.append(votes)
        usage.append(row_usage)
    return FerPlus(
        np.array(rows, dtype=np.int32),
        _stack(images),
        np.array(all_votes, dtype=np.uint8).reshape(-1, len(VOTE_COLUMNS)),
        np.array(usage),
        row_count,
    )


def majority_labels(all_votes: np.ndarray) -> np.ndarray:
    """(N,) int8 labels in EMOTIONS order from (N, 10) votes in VOTE_COLUMNS order, by FER+'s
    "majority" rule; NO_LABEL without a majority or where it is a column that is not our class."""
    counted = np.where(all_votes > 1, all_votes, 0).astype(np.int64)  # a single vote is noise
    has_majority = 2 * counted.max(axis=1) > counted.sum(axis=1)
    class_of_column = np.full(len(VOTE_COLUMNS), NO_LABEL)
    class_of_column[[VOTE_COLUMNS.index(column) for column in CLASS_COLUMNS]] = np.arange(len(EMOTIONS))
    return np.where(has_majority, class_of_column[counted.argmax(axis=1)], NO_LABEL).astype(np.int8)


def class_votes(all_votes: np.ndarray) -> np.ndarray:
    """(N, 7) votes for our classes, in EMOTIONS order, from (N, 10) votes in VOTE_COLUMNS order."""
    return all_votes[:, [VOTE_COLUMNS.index(column) for column in CLASS_COLUMNS]]


def build(fer2013_csv: Path | None = None, ferplus: Path | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The fields of each archive, by split name (train, val, test), from either source or both."""
    if fer2013_csv is None and ferplus is None:
        raise InvalidData("Nothing to build from: give fer2013.csv, the FER+ folder or both")
    fer2013 = read_fer2013(fer2013_csv) if fer2013_csv is not None else None
    if ferplus is None:
        rows = np.arange(len(fer2013.labels), dtype=np.int32)
        fields = {"images": fer2013.images, "labels": fer2013.labels, "row": rows}
        names = {"classes": np.array(EMOTIONS)}
        usage = fer2013.usage
    else:
        votes = read_ferplus(ferplus)
        rows = votes.rows
        fields = {
            "images": votes.images,
            "labels": majority_labels(votes.all_votes),
            "votes": class_votes(votes.all_votes),
            "all_votes": votes.all_votes,
            "row": rows,
        }
        names = {"classes": np.array(EMOTIONS), "vote_columns": np.array(VOTE_COLUMNS)}
        usage = votes.usage
        if fer2013 is not None:
            _check_row_for_row(votes, fer2013, ferplus / FERPLUS_LABELS, fer2013_csv)
    original = {"fer2013_label": fer2013.labels[rows]} if fer2013 is not None else {}
    return {
        split: {name: values[usage == split_usage] for name, values in fields.items()}
        | names
        | {name: values[usage == split_usage] for name, values in original.items()}
        for split_usage, split in SPLITS.items()
    }


def write(archives: dict[str, dict[str, np.ndarray]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, fields in archives.items():
        paths.append(out / f"{split}.npz")
        np.savez_compressed(paths[-1], **fields)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emotion.training.data",
        description="Build train.npz, val.npz and test.npz from fer2013.csv and/or the FER+ release.",
    )
    parser.add_argument("--fer2013-csv", type=Path, metavar="FILE", help="Kaggle's fer2013.csv")
    parser.add_argument(
        "--ferplus",
        type=Path,
        metavar="DIR",
        help=f"the folder holding {FERPLUS_LABELS} and {', '.join(FERPLUS_FOLDERS.values())}",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the archives go")
    args = parser.parse_args(argv)
    if args.fer2013_csv is None and args.ferplus is None:
        parser.error("give --fer2013-csv FILE, --ferplus DIR or both")
    try:
        archives = build(args.fer2013_csv, args.ferplus)
        paths = write(archives, args.out)
    except (InvalidData, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path, fields in zip(paths, archives.values(), strict=True):
        labelled = (fields["labels"] != NO_LABEL).sum()
        print(f"wrote {path}: {len(fields['images'])} faces, {labelled} of them with a label")
    return 0


def _records(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, str, dict[str, str]]]:
    """(row, where, record) for each data row of a CSV file with these columns (among others);
    `where` names the file, the row (from 0, after the header) and the line for messages."""
    if not path.is_file():
        raise InvalidData(f"No file {path}")
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        missing = [column for column in columns if column not in header]
        if missing:
            raise InvalidData(f"{path} has no column {', '.join(missing)} (its header: {', '.join(header)})")
        row = 0
        for values in reader:
            if not values:  # a blank line
                continue
            where = f"{path} row {row} (line {reader.line_num})"
            if len(values) != len(header):
                raise InvalidData(f"{where}: {len(values)} fields, the header has {len(header)}")
            yield row, where, dict(zip(header, values, strict=True))
            row += 1


def _usage(text: str, where: str) -> str:
    usage = text.strip()
    if usage not in SPLITS:
        raise InvalidData(f"{where}: Usage is {usage!r}, expected one of {', '.join(SPLITS)}")
    return usage


def _integer(record: dict[str, str], column: str, where: str, maximum: int) -> int:
    text = record[column].strip()
    if not (text.isascii() and text.isdigit() and int(text) <= maximum):
        raise InvalidData(f"{where}: {column} is {text!r}, expected a whole number from 0 to {maximum}")
    return int(text)


def _pixels(text: str, where: str) -> np.ndarray:
    values = text.split()
    if len(values) != FACE_SIZE * FACE_SIZE:
        raise InvalidData(
            f"{where}: {len(values)} pixel values, expected {FACE_SIZE * FACE_SIZE} ({FACE_SIZE}x{FACE_SIZE})"
        )
    try:
        pixels = np.array(values, dtype=np.int64)
    except ValueError:
        raise InvalidData(f"{where}: the pixels are not all whole numbers") from None
    if pixels.min() < 0 or pixels.max() > 255:
        raise InvalidData(f"{where}: pixel values outside 0-255")
    return pixels.astype(np.uint8).reshape(FACE_SIZE, FACE_SIZE)


def _image(path: Path, where: str) -> np.ndarray:
    """A 48x48 grayscale image file as (48, 48) uint8."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.size != (FACE_SIZE, FACE_SIZE):
                width, height = image.size
                raise InvalidData(f"{path} ({where}) is {width}x{height}, expected {FACE_SIZE}x{FACE_SIZE}")
            return np.asarray(image.convert("L"))
    except FileNotFoundError:
        raise InvalidData(f"{where} names {path.name}, which is not in {path.parent}") from None
    except OSError as error:
        raise InvalidData(f"{path} ({where}) cannot be read as an image: {error}") from None


def _stack(images: list[np.ndarray]) -> np.ndarray:
    return np.stack(images) if images else np.empty((0, FACE_SIZE, FACE_SIZE), dtype=np.uint8)


def _check_row_for_row(votes: FerPlus, fer2013: Fer2013, votes_path: Path, fer2013_path: Path) -> None:
    """FER+'s rows are fer2013.csv's rows, in order: refuse files that are not."""
    if votes.row_count != len(fer2013.labels):
        raise InvalidData(
            f"{votes_path} has {votes.row_count} rows and {fer2013_path} {len(fer2013.labels)}: "
            "FER+'s votes go row for row with fer2013.csv"
        )
    for problem, rows in (
        ("has another Usage", votes.usage != fer2013.usage[votes.rows]),
        ("has another image", (votes.images != fer2013.images[votes.rows]).any(axis=(1, 2))),
    ):
        if rows.any():
            row = votes.rows[rows.argmax()]
            raise InvalidData(
                f"{votes_path} row {row} {problem} than {fer2013_path} row {row}: "
                "the files do not come from the same release"
            )


if __name__ == "__main__":
    sys.exit(main())
