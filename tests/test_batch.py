"""The batch command: photos and videos to a Parquet event table, locally and on Spark local[2]."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pyarrow.parquet
import pytest
from PIL import Image

from emotion import batch
from emotion.batch import BatchError, analyse_file, analyse_path, run_batch, source_name
from emotion.classifier import BUNDLED_MODEL
from emotion.cli import main
from emotion.events import BATCH_SCHEMA
from emotion.history import ParquetHistory, export_table
from emotion.media import BROKEN_LINK, NOT_A_FILE
from scripts import samples
from tests.conftest import run_emotion

MODIFIED_NS = 1_700_000_000_123_456_789  # 2023-11-14 22:13:20.123 UTC


NOT_UTF8 = os.fsdecode(b"caf\xe9.png")  # a Latin-1 file name


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, astronaut_rgb):
    """A folder of three photos (one named in Latin-1), a short video, a text file to skip, and
    what must each be an error row: a broken photo, an empty file, a link to nothing, a named
    pipe and an FFmpeg concat script naming the video."""
    root = tmp_path_factory.mktemp("archive")
    (root / "term 1").mkdir()
    Image.fromarray(astronaut_rgb).save(root / "astronaut.png")
    Image.fromarray(astronaut_rgb[:, ::-1].copy()).save(root / "term 1" / "mirrored photo.jpg")
    Image.fromarray(astronaut_rgb).save(root / NOT_UTF8, format="PNG")
    samples.write_face_clip(root / "term 1" / "lecture.avi")
    (root / "term 1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not the rest")
    (root / "notes.txt").write_text("not a photo")
    (root / "empty.jpg").touch()
    (root / "gone.mp4").symlink_to(root / "nowhere.mp4")
    os.mkfifo(root / "pipe.avi")
    (root / "concat.mp4").write_text("ffconcat version 1.0\nfile 'term 1/lecture.avi'\n")
    for file in root.rglob("*"):
        if file.is_file():
            os.utime(file, ns=(MODIFIED_NS, MODIFIED_NS))
    return root


ANALYSED = [
    "astronaut.png",
    "broken.png",
    "caf\\xe9.png",
    "concat.mp4",
    "empty.jpg",
    "lecture.avi",
    "mirrored photo.jpg",
]
FAILED = ["broken.png", "concat.mp4", "empty.jpg", "gone.mp4", "missing.jpg", "pipe.avi"]


def run(inputs, out, **options):
    defaults = {"model": BUNDLED_MODEL, "preset": "general", "detect_every": 5, "progress": lambda line: None}
    return run_batch([str(inputs), str(inputs / "missing.jpg")], str(out), **{**defaults, **options})


def test_analyse_file_gives_the_events_of_a_photo_and_a_video_or_the_error(inputs):
    photo = analyse_file(inputs / "astronaut.png", "a.png", 1_000, str(BUNDLED_MODEL), "general", 5)
    assert (photo.kind, photo.frames, photo.error) == ("photo", 1, None)
    assert photo.events.schema == BATCH_SCHEMA
    row = photo.events.to_pylist()[0]
    assert (row["origin"], row["source_kind"], row["source"], row["face_id"]) == (
        "batch",
        "photo",
        "a.png",
        1,
    )
    assert (row["frame"], row["time_s"]) == (None, None)
    assert row["utc_time"].timestamp() == 1.0
    assert row["date"] == "1970-01-01"

    clip = (inputs / "term 1" / "lecture.avi").read_bytes()  # bytes, as Spark hands them over
    video = analyse_file(clip, "v.avi", 1_000, str(BUNDLED_MODEL), "general", 5)
    assert (video.kind, video.frames) == ("video", samples.CLIP_FRAMES)
    last = video.events.to_pylist()[-1]
    assert last["utc_time"].timestamp() == pytest.approx(1.0 + last["time_s"])  # the file's + the frame's
    assert f"{samples.CLIP_FRAMES} frames" in video.describe()

    broken = analyse_file(inputs / "term 1" / "broken.png", "b.png", 0, str(BUNDLED_MODEL), "general", 5)
    assert broken.events is None
    assert "not an image" in broken.error


def test_local_engine_writes_a_partitioned_table_and_an_errors_table(inputs, tmp_path):
    lines = []
    summary = run(inputs, tmp_path / "out", engine="local", processes=2, progress=lines.append)
    assert (summary.files, summary.errors) == (len(ANALYSED), len(FAILED))
    assert sorted(line.split("] ")[1].split(":")[0].rsplit("/", 1)[1] for line in lines) == ANALYSED
    assert all(line.startswith(tuple(f"[{done}/7]" for done in range(1, 8))) for line in lines)
    kinds = sorted(path.name for path in (tmp_path / "out" / "events").iterdir())
    assert kinds == ["source_kind=photo", "source_kind=video"]
    assert (tmp_path / "out" / "events" / "source_kind=photo" / "date=2023-11-14").is_dir()
    events = ParquetHistory(tmp_path / "out").read(export_table)
    assert events.num_rows == summary.events
    assert set(events.column("source").to_pylist()) == {
        source_name(str(inputs / "astronaut.png")),
        source_name(str(inputs / "term 1" / "mirrored photo.jpg")),
        source_name(str(inputs / "term 1" / "lecture.avi")),
        str(inputs / "caf\\xe9.png"),  # the byte that is not UTF-8, escaped
    }
    errors = {Path(error["source"]).name: error["error"] for error in read_errors(tmp_path / "out")}
    assert sorted(errors) == FAILED
    assert errors["gone.mp4"] == BROKEN_LINK and errors["pipe.avi"] == NOT_A_FILE
    assert "empty" in errors["empty.jpg"] and "not a video file" in errors["concat.mp4"]
    with pytest.raises(BatchError, match="already holds a batch table"):
        run(inputs, tmp_path / "out", engine="local")


def read_errors(out: Path) -> list[dict]:
    return pyarrow.parquet.read_table(out / "errors").to_pylist()


def test_a_failed_run_leaves_no_folder_and_the_same_folder_can_be_used_again(inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch, "_write_events", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run(inputs / "astronaut.png", out, engine="local", processes=1)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary one
    monkeypatch.undo()
    assert run(inputs / "astronaut.png", out, engine="local", processes=1).events == 1


def test_a_file_as_out_or_a_folder_with_files_is_refused(inputs, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    with pytest.raises(BatchError, match="taken is a file; --out takes a new folder"):
        run(inputs, taken)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("mine")
    with pytest.raises(BatchError, match="already holds files"):
        run(inputs, tmp_path / "folder")
    assert main(["batch", str(inputs / "astronaut.png"), "--out", str(taken)]) == 2
    assert "is a file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()  # an empty folder is as good as a new one
    assert run(inputs / "astronaut.png", tmp_path / "empty", processes=1).events == 1


def test_a_file_gone_or_failing_in_an_unexpected_way_is_an_error_row(inputs, tmp_path, monkeypatch):
    gone = analyse_path(str(tmp_path / "gone.png"), str(BUNDLED_MODEL), "general", 5)
    assert (gone.events, gone.error) == (None, "No such file or directory")

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(batch, "events_table", broken)
    photo = analyse_file(inputs / "astronaut.png", "a.png", 0, str(BUNDLED_MODEL), "general", 5)
    assert photo.error == "unexpected error: RuntimeError: a bug"


def test_spark_engine_writes_the_same_rows_as_the_local_engine(inputs, tmp_path, spark):
    local = run(inputs, tmp_path / "local", engine="local", processes=1)
    on_spark = run(inputs, tmp_path / "spark", engine="spark")
    assert on_spark == local
    local_events = ParquetHistory(tmp_path / "local").read(export_table)
    spark_events = ParquetHistory(tmp_path / "spark").read(export_table)
    assert local_events.num_rows > 0
    assert spark_events.equals(local_events)
    assert (tmp_path / "spark" / "events" / "source_kind=video" / "date=2023-11-14").is_dir()

    def errors(out):
        return sorted((error["source"], error["error"]) for error in read_errors(out))

    assert errors(tmp_path / "spark") == errors(tmp_path / "local")
    assert len(errors(tmp_path / "spark")) == len(FAILED)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["local", "spark"]  # no temporary folder left


def test_spark_runs_without_pysparks_warning_about_pandas_3(inputs, tmp_path, spark):
    # In a process of its own: the warning is given once in this one, and by each Spark worker.
    result = run_emotion(
        "batch",
        inputs / "astronaut.png",
        *("--out", tmp_path / "out", "--engine", "spark", "--master", "local[1]"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pandas >= 3" not in result.stderr


def test_cli_batch_reports_failures_in_its_exit_status(inputs, tmp_path, capsys):
    assert (
        main(["batch", str(inputs / "astronaut.png"), "--out", str(tmp_path / "one"), "--processes", "1"])
        == 0
    )
    assert "1 files, 1 detection events, 0 errors" in capsys.readouterr().out
    assert main(["batch", str(inputs / "notes.txt"), "--out", str(tmp_path / "two")]) == 1
    assert "error:" in capsys.readouterr().err
    assert main(["batch", str(inputs), "--out", str(tmp_path / "three"), "--master", "local[2]"]) == 2
    assert "--master needs --engine spark" in capsys.readouterr().err


def test_spark_workers_run_on_this_interpreter_without_an_activated_environment(inputs, tmp_path, spark):
    """As cron or systemd run it: this environment's python by path, its bin folder not on the
    PATH, so `python3` there (if any) lacks this environment's packages."""
    bin_folder = os.path.dirname(sys.executable)
    path = os.pathsep.join(
        folder for folder in os.environ["PATH"].split(os.pathsep) if folder and folder != bin_folder
    )
    environment = {
        name: value for name, value in os.environ.items() if name not in ("PYSPARK_PYTHON", "VIRTUAL_ENV")
    }
    result = run_emotion(
        "batch",
        inputs / "astronaut.png",
        *("--out", tmp_path / "out", "--engine", "spark", "--master", "local[1]"),
        env={**environment, "PATH": path},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 files, 1 detection events, 0 errors" in result.stdout


def test_analyse_file_takes_the_face_finder(tmp_path):
    path = tmp_path / "turned.png"
    Image.fromarray(samples.turned_astronaut(30)).save(path)

    rows = {
        detector: analyse_file(path, "t.png", 0, str(BUNDLED_MODEL), "general", 5, detector).events.num_rows
        for detector in ("blazeface", "haar")
    }

    assert rows == {"blazeface": 1, "haar": 0}  # Haar finds upright faces only
