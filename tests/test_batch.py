"""The batch command: photos and videos to a Parquet event table, locally and on Spark local[2]."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.parquet
import pytest
from PIL import Image

from emotion.batch import BatchError, analyse_file, run_batch, source_name
from emotion.classifier import BUNDLED_MODEL
from emotion.cli import main
from emotion.events import BATCH_SCHEMA
from emotion.history import ParquetHistory, export_table
from scripts import samples

MODIFIED_NS = 1_700_000_000_123_456_789  # 2023-11-14 22:13:20.123 UTC


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, astronaut_rgb):
    """A folder of two photos, a short video, a broken photo and a text file to skip."""
    root = tmp_path_factory.mktemp("archive")
    (root / "term 1").mkdir()
    Image.fromarray(astronaut_rgb).save(root / "astronaut.png")
    Image.fromarray(astronaut_rgb[:, ::-1].copy()).save(root / "term 1" / "mirrored photo.jpg")
    samples.write_face_clip(root / "term 1" / "lecture.avi")
    (root / "term 1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not the rest")
    (root / "notes.txt").write_text("not a photo")
    for file in root.rglob("*"):
        if file.is_file():
            os.utime(file, ns=(MODIFIED_NS, MODIFIED_NS))
    return root


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
    assert summary.files == 4
    assert summary.errors == 2
    assert len(lines) == 4 and all(line.startswith(("[1/4]", "[2/4]", "[3/4]", "[4/4]")) for line in lines)
    kinds = sorted(path.name for path in (tmp_path / "out" / "events").iterdir())
    assert kinds == ["source_kind=photo", "source_kind=video"]
    assert (tmp_path / "out" / "events" / "source_kind=photo" / "date=2023-11-14").is_dir()
    events = ParquetHistory(tmp_path / "out").read(export_table)
    assert events.num_rows == summary.events
    assert set(events.column("source").to_pylist()) == {
        source_name(str(inputs / "astronaut.png")),
        source_name(str(inputs / "term 1" / "mirrored photo.jpg")),
        source_name(str(inputs / "term 1" / "lecture.avi")),
    }
    errors = pyarrow.parquet.read_table(tmp_path / "out" / "errors").to_pylist()
    assert sorted(error["source"] for error in errors) == [
        str(inputs / "missing.jpg"),
        str(inputs / "term 1" / "broken.png"),
    ]
    with pytest.raises(BatchError, match="already holds"):
        run(inputs, tmp_path / "out", engine="local")


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
        return sorted(
            map(tuple, pyarrow.parquet.read_table(out / "errors").to_pandas().itertuples(index=False))
        )

    assert errors(tmp_path / "spark") == errors(tmp_path / "local")


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
    command = ["batch", str(inputs / "astronaut.png"), "--out", str(tmp_path / "out"), "--engine", "spark"]
    result = subprocess.run(
        [sys.executable, "-m", "emotion", *command, "--master", "local[1]"],
        cwd=samples.REPO,
        env={**environment, "PATH": path, "PYTHONPATH": str(samples.REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 files, 1 detection events, 0 errors" in result.stdout
