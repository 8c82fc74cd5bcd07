"""Command line: `python -m emotion predict PHOTO_OR_FOLDER... [--json]`, `python -m emotion video IN`,
`python -m emotion batch INPUT... --out DIR [--engine local|spark]` and `python -m emotion serve`
(the HTTP API, see emotion.api).

Exit status: 0 when every input was analysed (finding no face is a result, not a failure);
1 when any input could not be read or analysed (the others are still done); 2 for a usage
error or a model that cannot be loaded. Errors are one line on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from emotion.engagement import DEFAULT_PRESET, PRESETS
from emotion.faces import DEFAULT_FINDER, FINDERS
from emotion.labels import FACE_SIZE
from emotion.live import LiveSettings
from emotion.media import PHOTO_EXTENSIONS, find_media
from emotion.progress import ProgressPacer

logger = logging.getLogger(__name__)

API_HOST = "127.0.0.1"  # this machine only; 0.0.0.0 serves every network interface
API_PORT = 8000  # the page's Streamlit server uses 8501
PROGRESS_BAR_WIDTH = 30  # characters
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
COMMAND = "emotion-lens"  # the installed command (pyproject.toml); else run as `python -m emotion`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=COMMAND if Path(sys.argv[0]).name == COMMAND else "python -m emotion",
        description="Facial emotion recognition for photos and videos.",
        epilog="Exit status: 0 all inputs analysed, 1 some input failed, 2 usage or model error.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser(
        "predict",
        help="emotions of the faces in photos",
        description="Find the faces in photos and classify their emotions. Folders are searched "
        f"recursively for {', '.join(PHOTO_EXTENSIONS)} files.",
    )
    predict.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="photo or folder")
    predict.add_argument("--json", action="store_true", help="one JSON object per file and line")
    _add_detector_option(predict)
    _add_model_option(predict)

    video = commands.add_parser(
        "video",
        help="annotate a video file",
        description="Track the faces of a video and classify their emotions: an annotated H.264 MP4 "
        "and/or a CSV with one row per frame and face.",
    )
    video.add_argument("input", type=Path, metavar="IN", help="video file (MP4, MOV, AVI, WebM, ...)")
    video.add_argument("--out", type=Path, metavar="OUT.mp4", help="write the annotated video here")
    video.add_argument("--csv", type=Path, metavar="OUT.csv", help="write one row per (frame, face) here")
    video.add_argument(
        "--detect-every",
        type=_positive_int,
        default=LiveSettings().detect_every,
        metavar="N",
        help="search whole frames for faces on every Nth frame only, following them in between "
        "(default: %(default)s, as the webcam and the page; 1 is slower and a little more precise)",
    )
    _add_detector_option(video)
    _add_model_option(video)

    batch = commands.add_parser(
        "batch",
        help="photos and videos to a Parquet event table, on this machine or on Spark",
        description="Analyse every photo and video in the inputs (folders are searched recursively) "
        "and write OUT/events, a Parquet table of detection events partitioned by source kind and "
        "date, and OUT/errors, one row per file that could not be analysed.",
    )
    batch.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="file or folder (a path or, on Spark, any Hadoop URI)"
    )
    batch.add_argument("--out", required=True, metavar="DIR", help="a new folder for the tables")
    batch.add_argument("--engine", choices=("local", "spark"), default="local", help="default: %(default)s")
    batch.add_argument(
        "--master", metavar="URL", help="Spark master, e.g. local[4] (default: spark-submit's, else local[*])"
    )
    batch.add_argument(
        "--processes",
        type=_positive_int,
        metavar="N",
        help="local engine: worker processes (default: one per CPU core)",
    )
    batch.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=DEFAULT_PRESET,
        help="engagement preset (default: %(default)s)",
    )
    batch.add_argument(
        "--detect-every",
        type=_positive_int,
        default=LiveSettings().detect_every,
        metavar="N",
        help="videos: search whole frames for faces on every Nth frame (default: %(default)s)",
    )
    _add_detector_option(batch)
    _add_model_option(batch)
    serve = commands.add_parser(
        "serve",
        help="serve the HTTP API",
        description="Serve the HTTP API (documented at /docs) with the model loaded once, as the page "
        "loads it. Settings as for the page (.streamlit/secrets.toml in the working folder, else "
        "environment variables), and API_KEYS, API_RESULT_TTL_S, API_VIDEO_QUEUE.",
    )
    serve.add_argument("--host", default=API_HOST, help="address to listen on (default: %(default)s)")
    serve.add_argument(
        "--port", type=_port, default=API_PORT, help="port to listen on (default: %(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
    try:
        if args.command == "predict":
            return predict_command(args.paths, args.model, as_json=args.json, detector=args.detector)
        if args.command == "batch":
            return batch_command(args)
        if args.command == "serve":
            return serve_command(args.host, args.port)
        return video_command(args.input, args.out, args.csv, args.detect_every, args.model, args.detector)
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_FAILED


def predict_command(
    paths: Sequence[Path], model: Path | None, as_json: bool = False, detector: str = DEFAULT_FINDER
) -> int:
    from emotion.image import InvalidImage
    from emotion.pipeline import photo_faces
    from emotion.request import AnalysisRequest
    from emotion.results import photo_record

    files = list(find_media(paths, PHOTO_EXTENSIONS))
    if not files:
        _error("no photos found in " + ", ".join(str(path) for path in paths))
        return EXIT_FAILED
    loaded = _resolve_model(model)
    if loaded is None:
        return EXIT_USAGE
    request = AnalysisRequest.of(finder=detector)
    table = _Table(max(len(str(file)) for file, _ in files)) if not as_json else None
    failed = False
    for file, problem in files:
        photo = None
        if problem is None:
            try:
                photo = photo_faces(file, loaded.classifier, request.detector).released()
            except InvalidImage as error:
                problem = str(error)
        failed = failed or problem is not None
        if as_json:
            name = str(file)
            record = photo_record(name, [], request.finder, problem) if photo is None else photo.record(name)
            print(json.dumps(record), flush=True)
        else:
            table.print_file(file, [] if photo is None else photo.faces, problem)
    return EXIT_FAILED if failed else EXIT_OK


def video_command(
    source: Path,
    out: Path | None,
    csv_path: Path | None,
    detect_every: int,
    model: Path | None,
    detector: str = DEFAULT_FINDER,
) -> int:
    from emotion.request import AnalysisRequest
    from emotion.video import InvalidVideo, probe_video, process_video

    for path in (out, csv_path):
        if path is not None and not path.parent.is_dir():
            _error(f"cannot write {path}: no folder {path.parent}")
            return EXIT_FAILED
    try:
        probe_video(source)  # a bad file fails now, not after the model has loaded
    except InvalidVideo as error:
        _error(str(error))
        return EXIT_FAILED
    loaded = _resolve_model(model)
    if loaded is None:
        return EXIT_USAGE
    progress = _ProgressBar()
    try:
        # The live detector, as the page's Video tab.
        settings = AnalysisRequest.of(finder=detector, detect_every=detect_every).live_settings()
        result = process_video(source, loaded.classifier, settings=settings, progress=progress)
    except InvalidVideo as error:
        progress.finish()
        _error(str(error))
        return EXIT_FAILED
    progress.finish()
    try:
        if out is not None:
            out.write_bytes(result.video)
        if csv_path is not None:
            csv_path.write_text(result.to_csv())
    except OSError as error:
        _error(f"cannot write the result: {error}")
        return EXIT_FAILED
    print(
        f"{source}: {result.frames} frames, {result.duration_s:.1f} s at {result.fps:.3g} fps, "
        f"{result.width}x{result.height}" + (" (downscaled)" if result.downscaled else "")
    )
    print(f"faces in {result.frames_with_faces} of {result.frames} frames, {len(result.rows)} face rows")
    if result.dominant_emotion is not None:
        shares = ", ".join(
            f"{emotion} {100 * share:.0f}%"
            for emotion, share in sorted(result.distribution.items(), key=lambda item: -item[1])
            if share >= 0.005
        )
        print(f"emotions: {shares}; mean engagement {result.mean_engagement:.2f}")
    for path in (out, csv_path):
        if path is not None:
            print(f"wrote {path}")
    if out is None and csv_path is None:
        print("nothing written: give --out OUT.mp4 and/or --csv OUT.csv to keep the results")
    return EXIT_OK


def batch_command(args: argparse.Namespace) -> int:
    from emotion.batch import BatchError, run_batch

    if args.master is not None and args.engine != "spark":
        _error("--master needs --engine spark")
        return EXIT_USAGE
    loaded = _resolve_model(args.model)  # checked here, loaded again by each worker from its file
    if loaded is None:
        return EXIT_USAGE
    try:
        summary = run_batch(
            args.inputs,
            str(args.out),
            model=loaded.path,
            preset=args.preset,
            detect_every=args.detect_every,
            detector=args.detector,
            engine=args.engine,
            processes=args.processes,
            master=args.master,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except BatchError as error:
        _error(str(error))
        return EXIT_USAGE
    print(f"{summary.files} files, {summary.events} detection events, {summary.errors} errors")
    print(f"wrote {args.out}/events and {args.out}/errors")
    return EXIT_FAILED if summary.errors else EXIT_OK


def serve_command(host: str, port: int) -> int:
    import uvicorn

    from emotion.api import create_app
    from emotion.settings import SettingsError

    loaded = _resolve_model(None)
    if loaded is None:
        return EXIT_USAGE
    try:
        app = create_app(model=loaded)
    except SettingsError as error:
        _error(str(error))
        return EXIT_USAGE
    uvicorn.run(app, host=host, port=port)
    return EXIT_OK


def _add_detector_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--detector",
        choices=tuple(FINDERS),
        default=DEFAULT_FINDER,
        help="face finder: "
        + "; ".join(f"{name} ({finder.summary})" for name, finder in FINDERS.items())
        + " (default: %(default)s)",
    )


def _add_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=Path,
        metavar="PATH",
        help="Keras model file (default: MODEL_URL's model if set in .streamlit/secrets.toml or the "
        "environment, else the bundled one)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _port(text: str) -> int:
    port = _positive_int(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {port}")
    return port


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def _resolve_model(model_file: Path | None):
    """The model (emotion.remote.LoadedModel) the command uses, with settings from
    .streamlit/secrets.toml and the environment as for the page; which one it is goes to stderr.
    None after printing why it cannot be loaded."""
    from emotion.classifier import ModelError
    from emotion.remote import resolve_model
    from emotion.settings import read_secrets_file

    secrets = read_secrets_file()  # may log why the file is ignored
    try:
        with _native_output_silenced():
            loaded = resolve_model(secrets, model_file)
            loaded.classifier.predict_proba(
                np.zeros((1, FACE_SIZE, FACE_SIZE), dtype=np.uint8)
            )  # its first-run notes
    except ModelError as error:
        _error(str(error))
        return None
    if loaded.warning is not None:
        print(f"warning: {loaded.warning}", file=sys.stderr)
    print(f"model: {loaded.description}", file=sys.stderr, flush=True)
    return loaded


@contextlib.contextmanager
def _native_output_silenced() -> Iterator[None]:
    """Silence stdout and stderr at the file-descriptor level: loading TensorFlow and converting
    the model print start-up notes from C++ (and to stdout from Python), which would garble the
    table and the JSON lines. Python exceptions still propagate and are reported afterwards."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            with contextlib.redirect_stdout(devnull):
                yield
    finally:
        sys.stdout.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for descriptor in saved:
            os.close(descriptor)


class _Table:
    """One line per face: file, face number, box, emotion and its probability."""

    def __init__(self, file_width: int):
        self.file_width = max(len("FILE"), file_width)
        print(
            f"{'FILE':<{self.file_width}}  {'FACE':>4}  {'BOX (x, y, w, h)':<22}  {'EMOTION':<8}  CONFIDENCE"
        )

    def print_file(self, file: Path, faces, problem: str | None) -> None:
        name = f"{file!s:<{self.file_width}}"
        if problem is not None:
            print(f"{name}  {'-':>4}  error: {problem}", flush=True)
        elif not faces:
            print(f"{name}  {'-':>4}  no face found", flush=True)
        for number, face in enumerate(faces, start=1):
            box = "({}, {}, {}, {})".format(*face.box)
            confidence = 100 * face.confidence
            print(f"{name}  {number:>4}  {box:<22}  {face.emotion:<8}  {confidence:9.0f}%", flush=True)


class _ProgressBar:
    """`[#########.........]  45%  32/71 frames  3 s left` on stderr, redrawn in place."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.pace = ProgressPacer()
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        progress = self.pace(done, total)
        if progress is None:
            return
        filled = round(PROGRESS_BAR_WIDTH * progress.fraction)
        bar = "#" * filled + "." * (PROGRESS_BAR_WIDTH - filled)
        self.stream.write(
            f"\r[{bar}] {100 * progress.fraction:3.0f}%  {done}/{total} frames  {progress.left_s:.0f} s left "
        )
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
