"""`python -m emotion.training.data` on small fer2013.csv files and FER+ folders written here."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emotion.labels import EMOTIONS
from emotion.training.data import (
    FERPLUS_FOLDERS,
    VOTE_COLUMNS,
    InvalidData,
    build,
    class_votes,
    main,
    majority_labels,
)
from scripts import samples
from tests.conftest import REPO, emotion_data_file

USAGE = ["Training"] * 4 + ["PublicTest"] * 3 + ["PrivateTest"] * 2
FER2013_LABELS = [0, 1, 2, 3, 4, 5, 6, 3, 0]
# FER+ vote rows in VOTE_COLUMNS order (neutral, happiness, surprise, sadness, anger, disgust,
# fear, contempt, unknown, NF) and the label FER+'s majority rule gives each, in EMOTIONS order.
VOTES_AND_LABELS = [
    ([0, 10, 0, 0, 0, 0, 0, 0, 0, 0], EMOTIONS.index("happy")),
    ([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], -1),  # a tie is no majority
    ([4, 1, 1, 1, 1, 1, 1, 0, 0, 0], EMOTIONS.index("neutral")),  # single votes are dropped: 4 of 4
    ([0, 0, 0, 0, 0, 0, 0, 6, 2, 2], -1),  # contempt is not one of our classes
    ([0, 0, 0, 0, 6, 4, 0, 0, 0, 0], EMOTIONS.index("angry")),
    ([3, 3, 2, 2, 0, 0, 0, 0, 0, 0], -1),  # 3 of 10 is no majority
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], -1),  # not a face
    ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], -1),  # nothing but noise
    ([0, 0, 7, 0, 0, 0, 3, 0, 0, 0], EMOTIONS.index("surprise")),
]
DROPPED_ROW = 6  # FER+ has no image for this row: not a face
SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def fer2013_rows(images: np.ndarray) -> list[list[str]]:
    return [
        [str(label), " ".join(map(str, image.ravel())), usage]
        for label, image, usage in zip(FER2013_LABELS, images, USAGE, strict=True)
    ]


def write_fer2013_csv(path: Path, rows: list[list[str]]) -> Path:
    """A fer2013.csv as Kaggle's: emotion, pixels (space-separated grey levels), Usage."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        writer.writerows(rows)
    return path


def write_ferplus(folder: Path, images: np.ndarray) -> Path:
    """A FER+ folder: fer2013new.csv, and the images as FER+'s generate_training_data.py writes them."""
    for name in FERPLUS_FOLDERS.values():
        (folder / name).mkdir(parents=True)
    with open(folder / "fer2013new.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Usage", "Image name", *VOTE_COLUMNS])
        for row, (image, usage, (votes, _)) in enumerate(zip(images, USAGE, VOTES_AND_LABELS, strict=True)):
            name = "" if row == DROPPED_ROW else f"fer{row:07d}.png"
            writer.writerow([usage, name, *votes])
            if name:
                Image.fromarray(image).save(folder / FERPLUS_FOLDERS[usage] / name, compress_level=0)
    return folder


@pytest.fixture
def images() -> np.ndarray:
    return samples.face_crops(len(USAGE))


@pytest.fixture
def fer2013_csv(tmp_path, images) -> Path:
    return write_fer2013_csv(tmp_path / "fer2013.csv", fer2013_rows(images))


@pytest.fixture
def ferplus(tmp_path, images) -> Path:
    return write_ferplus(tmp_path / "ferplus", images)


def load(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    archives = {}
    for split in SPLITS.values():
        with np.load(folder / f"{split}.npz") as archive:
            archives[split] = dict(archive)
    return archives


def rows_by_split(without: tuple[int, ...] = ()) -> dict[str, list[int]]:
    return {
        split: [row for row, each in enumerate(USAGE) if each == usage and row not in without]
        for usage, split in SPLITS.items()
    }


def test_the_majority_rule_is_ferplus_own():
    all_votes = np.array([votes for votes, _ in VOTES_AND_LABELS], dtype=np.uint8)
    labels = majority_labels(all_votes)
    assert labels.dtype == np.int8
    assert labels.tolist() == [label for _, label in VOTES_AND_LABELS]


def test_fer2013_csv_alone_gives_every_face_with_its_label(fer2013_csv, images, tmp_path):
    assert main(["--fer2013-csv", str(fer2013_csv), "--out", str(tmp_path / "data")]) == 0
    archives = load(tmp_path / "data")
    for split, rows in rows_by_split().items():
        fields = archives[split]
        assert set(fields) == {"images", "labels", "fer2013_label", "row", "classes"}
        np.testing.assert_array_equal(fields["row"], rows)
        np.testing.assert_array_equal(fields["images"], images[rows])
        np.testing.assert_array_equal(fields["labels"], np.array(FER2013_LABELS)[rows])
        np.testing.assert_array_equal(fields["fer2013_label"], fields["labels"])
        assert fields["images"].dtype == np.uint8 and fields["labels"].dtype == np.int8
        assert fields["row"].dtype == np.int32
        assert tuple(fields["classes"]) == EMOTIONS


def test_ferplus_gives_its_faces_votes_and_majority_labels(ferplus, images, tmp_path):
    assert main(["--ferplus", str(ferplus), "--out", str(tmp_path / "data")]) == 0
    archives = load(tmp_path / "data")
    all_votes = np.array([votes for votes, _ in VOTES_AND_LABELS])
    our_columns = [VOTE_COLUMNS.index(name) for name in ("anger", "disgust", "fear", "happiness")] + [
        VOTE_COLUMNS.index(name) for name in ("sadness", "surprise", "neutral")
    ]
    for split, rows in rows_by_split(without=(DROPPED_ROW,)).items():
        fields = archives[split]
        assert set(fields) == {"images", "labels", "votes", "all_votes", "row", "classes", "vote_columns"}
        np.testing.assert_array_equal(fields["row"], rows)
        np.testing.assert_array_equal(fields["images"], images[rows])
        np.testing.assert_array_equal(fields["all_votes"], all_votes[rows])
        np.testing.assert_array_equal(fields["votes"], all_votes[rows][:, our_columns])
        np.testing.assert_array_equal(fields["labels"], [VOTES_AND_LABELS[row][1] for row in rows])
        assert fields["images"].dtype == fields["votes"].dtype == fields["all_votes"].dtype == np.uint8
        assert fields["labels"].dtype == np.int8 and fields["row"].dtype == np.int32
        assert tuple(fields["classes"]) == EMOTIONS and tuple(fields["vote_columns"]) == VOTE_COLUMNS


def test_both_sources_add_the_original_label_matched_by_row(fer2013_csv, ferplus, tmp_path):
    out = tmp_path / "data"
    assert main(["--fer2013-csv", str(fer2013_csv), "--ferplus", str(ferplus), "--out", str(out)]) == 0
    for fields in load(out).values():
        assert "votes" in fields
        np.testing.assert_array_equal(fields["fer2013_label"], np.array(FER2013_LABELS)[fields["row"]])
        assert fields["fer2013_label"].dtype == np.int8


def test_the_command_reports_what_it_wrote_and_exits_with_2_on_bad_input(ferplus, tmp_path):
    def run(*args):
        command = [sys.executable, "-m", "emotion.training.data", *map(str, args)]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)

    out = tmp_path / "data"
    result = run("--ferplus", ferplus, "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"wrote {out / 'train.npz'}: 4 faces, 2 of them with a label",
        f"wrote {out / 'val.npz'}: 2 faces, 1 of them with a label",
        f"wrote {out / 'test.npz'}: 2 faces, 1 of them with a label",
    ]

    (ferplus / "FER2013Valid" / "fer0000005.png").unlink()
    result = run("--ferplus", ferplus, "--out", out)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "fer2013new.csv row 5 (line 7) names fer0000005.png, which is not in" in result.stderr

    nothing = run("--out", out)
    assert nothing.returncode == 2 and "give --fer2013-csv FILE, --ferplus DIR or both" in nothing.stderr


BLACK = "0 " * 2304


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["3", "1 2 3", "Training"]], r"fer2013\.csv row 0 \(line 2\): 3 pixel values, expected 2304"),
        ([["3", "x " * 2304, "Training"]], r"row 0 \(line 2\): the pixels are not all whole numbers"),
        ([["3", "256 " * 2304, "Training"]], r"row 0 \(line 2\): pixel values outside 0-255"),
        ([["3", BLACK, "Training"], ["7", BLACK, "Training"]], r"row 1 \(line 3\): emotion is '7'"),
        ([["3", BLACK, "Testing"]], r"row 0 \(line 2\): Usage is 'Testing'"),
        ([["3", BLACK]], r"row 0 \(line 2\): 2 fields, the header has 3"),
    ],
    ids=["short pixel row", "not numbers", "out of range", "unknown label", "unknown usage", "missing field"],
)
def test_bad_fer2013_rows_are_refused_naming_file_and_row(tmp_path, rows, message):
    path = write_fer2013_csv(tmp_path / "fer2013.csv", rows)
    with pytest.raises(InvalidData, match=message):
        build(fer2013_csv=path)


def test_a_missing_file_or_column_is_named(tmp_path):
    path = tmp_path / "fer2013.csv"
    path.write_text(f"emotion,pixels\n3,{BLACK}\n")
    with pytest.raises(InvalidData, match=r"fer2013\.csv has no column Usage"):
        build(fer2013_csv=path)
    with pytest.raises(InvalidData, match=r"No file .*missing\.csv"):
        build(fer2013_csv=tmp_path / "missing.csv")


def test_bad_ferplus_folders_are_refused_naming_file_and_row(ferplus):
    image = ferplus / "FER2013Train" / "fer0000002.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(image)
    with pytest.raises(InvalidData, match=r"fer0000002\.png \(.*fer2013new\.csv row 2 \(line 4\)\) is 64x64"):
        build(ferplus=ferplus)

    image.write_bytes(b"not a PNG")
    with pytest.raises(
        InvalidData, match=r"fer0000002\.png \(.*row 2 \(line 4\)\) cannot be read as an image"
    ):
        build(ferplus=ferplus)

    image.unlink()
    with pytest.raises(
        InvalidData, match=r"row 2 \(line 4\) names fer0000002\.png, which is not in .*FER2013Train"
    ):
        build(ferplus=ferplus)

    votes = ferplus / "fer2013new.csv"
    header, first, *rest = votes.read_text().splitlines()
    votes.write_text("\n".join([header, first.replace(",10,", ",-1,"), *rest]) + "\n")
    with pytest.raises(InvalidData, match=r"row 0 \(line 2\): happiness is '-1'"):
        build(ferplus=ferplus)

    votes.write_text(header.replace(",NF", "") + "\n")
    with pytest.raises(InvalidData, match=r"fer2013new\.csv has no column NF"):
        build(ferplus=ferplus)


def test_files_that_do_not_go_row_for_row_are_refused(ferplus, images, tmp_path):
    rows = fer2013_rows(images)
    with pytest.raises(InvalidData, match=r"fer2013new\.csv has 9 rows and .*short\.csv 8"):
        build(write_fer2013_csv(tmp_path / "short.csv", rows[:-1]), ferplus)

    moved = [*rows[:3], [rows[3][0], rows[3][1], "PublicTest"], *rows[4:]]
    with pytest.raises(InvalidData, match=r"fer2013new\.csv row 3 has another Usage than .*moved\.csv row 3"):
        build(write_fer2013_csv(tmp_path / "moved.csv", moved), ferplus)

    other = images.copy()
    other[4] = 255 - other[4]
    with pytest.raises(InvalidData, match=r"fer2013new\.csv row 4 has another image than .*other\.csv row 4"):
        build(write_fer2013_csv(tmp_path / "other.csv", fer2013_rows(other)), ferplus)


def test_the_rule_and_the_columns_reproduce_the_ferplus_archives():
    for split in ("train", "val"):
        with np.load(emotion_data_file(f"ferplus/{split}.npz")) as archive:
            assert tuple(archive["vote_columns"]) == VOTE_COLUMNS
            assert tuple(archive["classes"]) == EMOTIONS
            np.testing.assert_array_equal(majority_labels(archive["all_votes"]), archive["labels"])
            np.testing.assert_array_equal(class_votes(archive["all_votes"]), archive["votes"])
