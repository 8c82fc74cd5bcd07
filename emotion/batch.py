"""Archives at scale: photos and videos in, a Parquet event table out, on one machine or on Spark.

`python -m emotion batch INPUT... --out DIR` analyses every photo and video in the inputs
(files, and folders searched recursively for the extensions below) and writes

    DIR/events/source_kind=KIND/date=YYYY-MM-DD/*.parquet   BATCH_SCHEMA, one row per face and frame
    DIR/errors/*.parquet                                    ERROR_SCHEMA, one row per file that failed

Both engines run the same `analyse_file` on each file, so they write the same rows:
- local: a pool of processes on this machine, each loading the model once.
- spark: a PySpark job. Files are read with Spark's binary file source (any Hadoop-compatible
  storage), spread over tasks by size, and analysed with `mapInPandas`; each Python worker
  loads the model, shipped to the executors with `SparkContext.addFile`, once. It runs on `local[N]` and,
  as it is, under `spark-submit` on a cluster whose executors have requirements.txt installed.

An event's `utc_time` is the file's modification time plus the frame's time in the video: the
best guess at when an archived recording was made, and the same on every engine and rerun.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.dataset
import pyarrow.parquet

from emotion.events import (
    BATCH_SCHEMA,
    ERROR_SCHEMA,
    PARTITION_COLUMNS,
    VideoFaces,
    events_table,
    result_events,
    with_date,
)
from emotion.faces import DEFAULT_FINDER
from emotion.media import MEDIA_EXTENSIONS, MISSING, find_media, media_kind
from emotion.results import FaceRow

logger = logging.getLogger(__name__)

ENGINES = ("local", "spark")
# PySpark 4.3 warns on every run, in this process and in each worker, that it "does not yet fully
# support pandas >= 3.0.0". The Spark engine hands pandas only flat Arrow batches of bytes, strings,
# numbers and timestamps (mapInPandas, both ways), and tests/test_batch.py finds Spark's tables
# identical to the local engine's under the pandas 3 that requirements.txt installs; so the
# warning is silenced, by its message alone.
PANDAS_3_WARNING = "PySpark does not yet fully support pandas >= 3"
PACKAGE = Path(str(importlib.resources.files("emotion")))  # its modules travel to Spark's executors

Progress = Callable[[str], None]  # one line per file analysed


class BatchError(RuntimeError):
    """The batch cannot run (its output folder is taken, Spark is missing); the message says why."""


class FileResult(NamedTuple):
    source: str  # the file's absolute path, or its URI outside the local file system
    kind: str  # "photo" or "video"
    frames: int  # analysed
    events: pa.Table | None  # BATCH_SCHEMA; None when the file failed
    error: str | None

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.source}: error: {self.error}"
        faces = self.events.num_rows
        frames = "" if self.kind == "photo" else f", {self.frames} frames"
        return f"{self.source}: {self.kind}{frames}, {faces} face{'s' * (faces != 1)}"


class BatchSummary(NamedTuple):
    files: int
    events: int
    errors: int


def source_name(path: str) -> str:
    """A local file's absolute path (also from a file: URI, as Spark gives it), else the URI itself.

    Bytes of a file name that are not UTF-8 are written as backslash escapes (`caf\\xe9.jpg`),
    so that every name can be stored.
    """
    if path.startswith("file:"):
        path = unquote(urlparse(path).path, errors="surrogateescape")
    elif "://" in path:
        return path
    return os.fsencode(os.path.abspath(path)).decode("utf-8", "backslashreplace")


@functools.cache
def _classifier(model: str):
    from emotion.classifier import load_classifier

    return load_classifier(model)


def analyse_file(
    data: bytes | Path,
    source: str,
    modified_ms: int,
    model: str,
    preset: str,
    detect_every: int,
    detector: str = DEFAULT_FINDER,
) -> FileResult:
    """The events of one photo or video (its bytes or its path), or why it cannot be analysed.

    modified_ms: the file's modification time, in milliseconds since the epoch (what Hadoop
    file systems give). The model file is loaded once per process. detector: the face finder
    (emotion.faces.FINDERS).
    """
    from emotion.image import InvalidImage
    from emotion.pipeline import photo_faces
    from emotion.request import AnalysisRequest
    from emotion.video import InvalidVideo, track_video

    kind = media_kind(source)
    try:
        request = AnalysisRequest.of(
            finder=detector, engagement_preset=preset, detect_every=detect_every, origin="batch"
        )
        classifier = _classifier(model)
        if kind == "photo":
            result, analysed = photo_faces(data, classifier, request.detector).released(), 1
        else:
            rows: list[FaceRow] = []
            analysed = width = height = 0
            for frame in track_video(data, classifier, settings=request.live_settings(), limit_length=False):
                analysed += 1
                width, height = frame.width, frame.height
                rows.extend(FaceRow(frame.index, frame.time_s, face) for face in frame.faces)
            result = VideoFaces(rows, width, height)
        events = events_table(*result_events(result, source, request, classifier.sha256, modified_ms / 1000))
    except (InvalidImage, InvalidVideo, OSError) as error:
        return FileResult(source, kind, 0, None, str(error) or type(error).__name__)
    except Exception as error:  # one file must not end the batch: it is an error row like the others
        logger.exception("Analysing %s failed", source)
        return FileResult(source, kind, 0, None, f"unexpected error: {type(error).__name__}: {error}")
    return FileResult(source, kind, analysed, with_date(events), None)


def analyse_path(
    path: str, model: str, preset: str, detect_every: int, detector: str = DEFAULT_FINDER
) -> FileResult:
    """analyse_file on a local file, read where it runs: what both engines do with each local file."""
    source = source_name(path)
    try:
        modified_ms = os.stat(path).st_mtime_ns // 1_000_000
    except OSError as error:  # gone since it was listed
        return FileResult(source, media_kind(path), 0, None, error.strerror or str(error))
    return analyse_file(Path(path), source, modified_ms, model, preset, detect_every, detector)


def run_batch(
    inputs: Sequence[str],
    out: str,
    *,
    model: Path,
    preset: str,
    detect_every: int,
    detector: str = DEFAULT_FINDER,
    engine: str = "local",
    processes: int | None = None,
    master: str | None = None,
    progress: Progress = print,
) -> BatchSummary:
    """Analyse the inputs with the engine and write out/events and out/errors. Raises BatchError."""
    if engine not in ENGINES:
        raise BatchError(f"Unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if "://" not in out:
        _check_new_folder(Path(out.removeprefix("file:")))
    if engine == "spark":
        return _run_spark(
            inputs,
            out,
            model=model,
            preset=preset,
            detect_every=detect_every,
            detector=detector,
            master=master,
            progress=progress,
        )
    return _run_local(
        inputs,
        Path(out),
        model=model,
        preset=preset,
        detect_every=detect_every,
        detector=detector,
        processes=processes,
        progress=progress,
    )


def _check_new_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BatchError(f"{out} is a file; --out takes a new folder for the tables")
    if out.is_dir() and any(out.iterdir()):
        held = "a batch table" if any((out / name).exists() for name in ("events", "errors")) else "files"
        raise BatchError(f"{out} already holds {held}; choose a new folder")


@contextlib.contextmanager
def _new_folder(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out` for the tables, renamed to `out` once both are written and
    removed if anything fails, so that a failed run leaves no half-written table behind."""
    _check_new_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield temporary
        os.replace(temporary, out)  # also over an empty folder
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _error_table(errors: Sequence[tuple[str, str]]) -> pa.Table:
    return pa.table(
        [[source for source, _ in errors], [problem for _, problem in errors]], schema=ERROR_SCHEMA
    )


# --- Local engine --------------------------------------------------------------------------


def _run_local(
    inputs: Sequence[str],
    out: Path,
    *,
    model: Path,
    preset: str,
    detect_every: int,
    detector: str,
    processes: int | None,
    progress: Progress,
) -> BatchSummary:
    files = list(find_media(inputs))
    errors = [(source_name(str(path)), problem) for path, problem in files if problem is not None]
    todo = [str(path) for path, problem in files if problem is None]
    events = 0
    # Spawned, not forked: a fork would copy the parent's threads' locks in whatever state they are.
    context = multiprocessing.get_context("spawn")
    with (
        _new_folder(out) as folder,
        ProcessPoolExecutor(processes or os.cpu_count() or 1, mp_context=context) as pool,
    ):
        futures = {
            pool.submit(analyse_path, path, str(model), preset, detect_every, detector): index
            for index, path in enumerate(todo)
        }
        for done, future in enumerate(as_completed(futures), start=1):
            path = todo[futures[future]]
            try:
                result = future.result()
            except Exception as error:  # the worker process died (killed, out of memory)
                result = FileResult(source_name(path), media_kind(path), 0, None, f"analysis failed: {error}")
            progress(f"[{done}/{len(todo)}] {result.describe()}")
            if result.error is not None:
                errors.append((result.source, result.error))
            elif result.events.num_rows:
                _write_events(result.events, folder / "events", f"part-{futures[future]:05d}-{{i}}.parquet")
                events += result.events.num_rows
        (folder / "errors").mkdir()
        pyarrow.parquet.write_table(_error_table(errors), folder / "errors" / "part-00000.parquet")
    return BatchSummary(len(todo), events, len(errors))


def _write_events(events: pa.Table, folder: Path, basename_template: str) -> None:
    pyarrow.dataset.write_dataset(
        events,
        folder,
        format="parquet",
        partitioning=list(PARTITION_COLUMNS),
        partitioning_flavor="hive",
        basename_template=basename_template,
        existing_data_behavior="overwrite_or_ignore",
    )


# --- Spark engine --------------------------------------------------------------------------

# Arrow type -> Spark SQL type, for the schema mapInPandas returns.
_SPARK_TYPES = {
    pa.int16(): "smallint",
    pa.int32(): "int",
    pa.float32(): "float",
    pa.float64(): "double",
    pa.string(): "string",
    pa.timestamp("us", tz="UTC"): "timestamp",
}
RESULT_SCHEMA = BATCH_SCHEMA.append(pa.field("error", pa.string()))  # what each Spark task returns
MEDIA_PATTERN = r"\.(" + "|".join(extension[1:] for extension in MEDIA_EXTENSIONS) + r")$"


def spark_schema(schema: pa.Schema) -> str:
    return ", ".join(f"`{field.name}` {_SPARK_TYPES[field.type]}" for field in schema)


def _result_frame(result: FileResult):
    """A FileResult as the pandas rows of RESULT_SCHEMA that a Spark task returns."""
    print(result.describe(), flush=True)  # the executor's log; the console on local[N]
    if result.error is not None:
        columns = {field.name: pa.nulls(1, field.type) for field in RESULT_SCHEMA}
        columns.update(source=pa.array([result.source]), error=pa.array([result.error]))
        return pa.table(list(columns.values()), schema=RESULT_SCHEMA).to_pandas()
    return result.events.append_column("error", pa.nulls(result.events.num_rows, pa.string())).to_pandas()


def _analyse_paths(batches, model_name: str, preset: str, detect_every: int, detector: str):
    """mapInPandas over local files: each batch holds rows (path,), the path as file-system bytes."""
    from pyspark import SparkFiles

    _accept_pandas_3()
    model = SparkFiles.get(model_name)
    for batch in batches:
        for path in batch["path"]:
            local_path = os.fsdecode(bytes(path))
            yield _result_frame(analyse_path(local_path, model, preset, detect_every, detector))


def _analyse_contents(batches, model_name: str, preset: str, detect_every: int, detector: str):
    """mapInPandas over other storage: each batch holds binary file rows (path, modificationTime, content)."""
    import pandas as pd
    from pyspark import SparkFiles

    _accept_pandas_3()
    model = SparkFiles.get(model_name)
    for batch in batches:
        for path, modified, content in zip(
            batch["path"], batch["modificationTime"], batch["content"], strict=True
        ):
            modified_ms = pd.Timestamp(modified).value // 1_000_000
            source = source_name(path)
            result = analyse_file(bytes(content), source, modified_ms, model, preset, detect_every, detector)
            yield _result_frame(result)


def _package_zip(folder: Path) -> Path:
    """The emotion package's modules as a zip for SparkContext.addPyFile, so executors import this
    code. Not emotion.model, where the engine is installed: files inside a zip have no path that
    the face finder's runtime can open (see emotion.model_file.shipped_file)."""
    archive = folder / "emotion.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zip_file:
        for file in sorted(PACKAGE.rglob("*.py")):
            if file.parent == PACKAGE / "model":
                continue
            zip_file.write(file, file.relative_to(PACKAGE.parent))
    return archive


def _accept_pandas_3() -> None:
    """Silence PySpark's warning about pandas 3 in this process (see PANDAS_3_WARNING)."""
    warnings.filterwarnings("ignore", message=PANDAS_3_WARNING, category=FutureWarning)


def spark_session(master: str | None = None):
    """The active SparkSession (spark-submit's), or a new one; `master` overrides spark-submit's."""
    _accept_pandas_3()
    try:
        from pyspark.sql import SparkSession
    except ImportError as error:
        raise BatchError("The Spark engine needs PySpark: pip install -r requirements-spark.txt") from error
    builder = SparkSession.builder.appName("emotion-batch")
    if master is not None:
        builder = builder.master(master)
    if _starts_local_spark(master) and "PYSPARK_PYTHON" not in os.environ:
        # PySpark starts its Python workers with PYSPARK_PYTHON, read when the context starts
        # (the spark.pyspark.python setting only reaches it through spark-submit), else with
        # whichever `python3` comes first on the PATH, which may lack this environment's
        # packages. On this machine, the workers run this interpreter.
        os.environ["PYSPARK_PYTHON"] = sys.executable
    return builder.getOrCreate()


def _starts_local_spark(master: str | None) -> bool:
    """Whether the session runs on this machine: a local[N] master, or none given outside
    spark-submit (which sets PYSPARK_GATEWAY_PORT), where PySpark runs local[*]."""
    if master is not None:
        return master.startswith("local")
    return "PYSPARK_GATEWAY_PORT" not in os.environ


def _local_path(spark, name: str) -> str | None:
    """The local path a name stands for to Spark, or None for a name on other storage."""
    if name.startswith("file:"):
        return unquote(urlparse(name).path, errors="surrogateescape")
    if "://" in name:
        return None
    default = spark.sparkContext._jsc.hadoopConfiguration().get("fs.defaultFS", "file:///")
    return name if default.startswith("file:") else None


def _stored_inputs(spark, names: Sequence[str]) -> Iterator[tuple[str, bool | None]]:
    """(qualified path, is a folder) per name on other storage, through Hadoop; None: missing."""
    jvm = spark.sparkContext._jvm
    configuration = spark.sparkContext._jsc.hadoopConfiguration()
    for name in names:
        path = jvm.org.apache.hadoop.fs.Path(name)
        file_system = path.getFileSystem(configuration)
        qualified = file_system.makeQualified(path)
        if not file_system.exists(qualified):
            yield qualified.toString(), None
        else:
            yield qualified.toString(), file_system.getFileStatus(qualified).isDirectory()


@contextlib.contextmanager
def _spark_output(spark, out: str) -> Iterator[str]:
    """Where Spark writes the tables: on this machine's file system, a new folder renamed into
    place at the end (see _new_folder); on other storage, `out` itself, each table committed by
    Spark (its _SUCCESS file)."""
    local = _local_path(spark, out)
    if local is None:
        yield out
        return
    with _new_folder(Path(local)) as folder:
        yield folder.as_uri()


def _run_spark(
    inputs: Sequence[str],
    out: str,
    *,
    model: Path,
    preset: str,
    detect_every: int,
    detector: str,
    master: str | None,
    progress: Progress,
) -> BatchSummary:
    from pyspark import StorageLevel
    from pyspark.sql import DataFrame, functions

    spark = spark_session(master)
    context = spark.sparkContext
    # Each file is handed to the analysis alone, so memory holds one file at a time.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "1")
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    options = {"model_name": model.name, "preset": preset, "detect_every": detect_every, "detector": detector}
    schema = spark_schema(RESULT_SCHEMA)
    with (
        tempfile.TemporaryDirectory(prefix="emotion-batch-") as temporary,
        _spark_output(spark, out) as target,
    ):
        context.addPyFile(str(_package_zip(Path(temporary))))
        context.addFile(str(model))
        problems: list[tuple[str, str]] = []  # (source, problem) found before any analysis
        local_files: list[tuple[bytes]] = []
        stored: list[str] = []
        for name in inputs:
            local = _local_path(spark, name)
            if local is None:
                stored.append(name)
                continue
            # Files on this machine are listed and read as the local engine does, by the same
            # code: a pipe or a link to nothing is an error row, a name need not be UTF-8.
            for path, problem in find_media([local]):
                if problem is None:
                    local_files.append((os.fsencode(path),))
                else:
                    problems.append((source_name(str(path)), problem))
        results = []
        files = len(local_files)
        if local_files:
            paths = spark.createDataFrame(context.parallelize(local_files, len(local_files)), "path binary")
            results.append(paths.mapInPandas(functools.partial(_analyse_paths, **options), schema))
        for path, is_folder in _stored_inputs(spark, stored):
            if is_folder is None:
                problems.append((source_name(path), MISSING))
                continue
            # Spark packs small files into tasks by size (a file of more than 128 MB is a task of
            # its own). Its reader skips empty files, which stay out of both tables here.
            reader = spark.read.format("binaryFile")
            if is_folder:
                reader = reader.option("recursiveFileLookup", "true")
            contents = reader.load(path).select("path", "modificationTime", "content")
            if is_folder:
                contents = contents.where(functions.lower("path").rlike(MEDIA_PATTERN))
            files += contents.count()
            results.append(contents.mapInPandas(functools.partial(_analyse_contents, **options), schema))
        analysed = functools.reduce(DataFrame.unionByName, results, spark.createDataFrame([], schema))
        analysed = analysed.persist(StorageLevel.DISK_ONLY)
        try:
            events = analysed.where(functions.col("error").isNull()).drop("error")
            events.write.partitionBy(*PARTITION_COLUMNS).parquet(f"{target}/events")
            failed = analysed.where(functions.col("error").isNotNull()).select("source", "error")
            if problems:
                failed = failed.unionByName(spark.createDataFrame(problems, spark_schema(ERROR_SCHEMA)))
            failed.coalesce(1).write.parquet(f"{target}/errors")
            summary = BatchSummary(
                files=files,
                events=events.count(),
                errors=failed.count(),
            )
        finally:
            analysed.unpersist()
    progress(f"{summary.files} files analysed on Spark ({context.master})")
    return summary
