"""The real commands, run as a user runs them: `python -m emotion ...` in a subprocess."""

import csv
import io
import json

import av
import pytest
from PIL import Image

from emotion.labels import EMOTIONS
from emotion.live import LiveSettings
from emotion.results import CSV_COLUMNS
from emotion.video import process_video
from scripts import samples
from tests.conftest import REPO, run_emotion

MODEL = REPO / "model" / "emotion_cnn.keras"


@pytest.fixture
def photos(tmp_path, astronaut_rgb):
    """A folder with a portrait, a damaged photo in a subfolder and a file that is not a photo."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    Image.fromarray(astronaut_rgb).save(folder / "astronaut.png")
    (folder / "more" / "damaged.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (folder / "notes.txt").write_text("not a photo, not looked at")
    return folder


def test_predict_json_gives_one_object_per_photo_and_goes_on_after_an_error(photos):
    result = run_emotion("predict", photos, "--json", "--model", MODEL)
    assert result.returncode == 1, result.stderr  # one photo could not be read
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["file"] for record in records] == [
        str(photos / "astronaut.png"),
        str(photos / "more" / "damaged.jpg"),
    ]
    portrait, damaged = records
    assert "error" not in portrait and len(portrait["faces"]) >= 1
    face = portrait["faces"][0]
    assert face["face_id"] == 1
    assert len(face["box"]) == 4 and all(isinstance(value, int) for value in face["box"])
    assert face["emotion"] in EMOTIONS and list(face["probabilities"]) == list(EMOTIONS)
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert face["confidence"] == max(face["probabilities"].values())
    assert damaged["faces"] == [] and "cannot be read" in damaged["error"]
    assert "Traceback" not in result.stderr


def test_predict_prints_a_table(photos):
    result = run_emotion("predict", photos / "astronaut.png", "--model", MODEL)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["FILE", "FACE", "BOX"]
    assert rows and rows[0].startswith(str(photos / "astronaut.png"))
    assert rows[0].split()[-2] in EMOTIONS and rows[0].endswith("%")


def test_video_writes_the_annotated_mp4_and_the_csv_with_a_progress_bar(tmp_path, classifier, face_clip):
    out, table = tmp_path / "annotated.mp4", tmp_path / "faces.csv"
    result = run_emotion(
        "video", face_clip, "--out", out, "--csv", table, "--detect-every", "3", "--model", MODEL
    )
    assert result.returncode == 0, result.stderr
    assert "100%" in result.stderr and "71/71 frames" in result.stderr
    assert "Traceback" not in result.stderr
    assert f"wrote {out}" in result.stdout
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.average_rate == 30
        assert sum(1 for _ in container.decode(stream)) == 71
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert rows and tuple(rows[0]) == CSV_COLUMNS
    assert len({(row["frame"], row["face_id"]) for row in rows}) == len(rows)
    # The faces the page's Video tab finds with the same settings (the live detector).
    expected = process_video(face_clip, classifier, settings=LiveSettings(detect_every=3))
    assert table.read_text() == expected.to_csv()


@pytest.mark.parametrize(
    ("case", "message"),
    [("missing", "No such file: "), ("empty", "empty.mp4 is empty"), ("unwritable", "cannot write ")],
)
def test_video_errors_are_one_line_without_a_traceback(tmp_path, case, message, face_clip):
    args = {
        "missing": [tmp_path / "missing.mp4"],
        "empty": [tmp_path / "empty.mp4"],
        "unwritable": [face_clip, "--out", tmp_path / "no-such-folder" / "out.mp4"],
    }[case]
    (tmp_path / "empty.mp4").write_bytes(b"")
    result = run_emotion("video", *args)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert message in result.stderr
    assert result.stdout == ""


def test_usage_and_model_errors_exit_with_2(tmp_path, face_clip):
    usage = run_emotion("video", face_clip, "--detect-every", "0")
    assert usage.returncode == 2 and "must be 1 or more" in usage.stderr
    image = tmp_path / "grey.png"
    Image.new("RGB", (64, 64), "grey").save(image)
    result = run_emotion("predict", image, "--model", tmp_path / "missing.keras")
    assert result.returncode == 2
    assert result.stderr.startswith("error: No model file at ")
    assert "Traceback" not in result.stderr


def test_predict_takes_the_face_finder_and_says_which_it_used(tmp_path):
    Image.fromarray(samples.turned_astronaut(30)).save(tmp_path / "turned.png")

    default = json.loads(run_emotion("predict", tmp_path / "turned.png", "--json", "--model", MODEL).stdout)
    haar = json.loads(
        run_emotion(
            "predict", tmp_path / "turned.png", "--json", "--detector", "haar", "--model", MODEL
        ).stdout
    )

    assert default["detector"] == "blazeface" and len(default["faces"]) == 1
    assert haar["detector"] == "haar" and haar["faces"] == []  # upright faces only
    assert run_emotion("predict", tmp_path / "turned.png", "--detector", "dlib").returncode == 2
