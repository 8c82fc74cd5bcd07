"""Downloading the model from MODEL_URL, for real, from an HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import logging
import threading
import zipfile
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

import numpy as np
import pyarrow.parquet
import pytest
from PIL import Image

from emotion import ModelDownloadError, remote
from emotion.classifier import BUNDLED_MODEL
from emotion.model_file import METADATA_MEMBER, RUNTIME_MEMBER
from emotion.remote import ModelSource, resolve_model
from tests.conftest import run_emotion

MODEL_SETTINGS = ("MODEL_URL", "MODEL_SHA256", "MODEL_CACHE_DIR")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Dribble(NamedTuple):
    """A body sent one byte every `interval_s` seconds, for at most `limit_s` seconds."""

    body: bytes
    interval_s: float = 0.05
    limit_s: float = 5.0


class Unsized(NamedTuple):
    """A body sent without a Content-Length: it ends when the connection closes."""

    body: bytes


class FileServer:
    """Serves `files` (path -> bytes, Dribble or Unsized) on 127.0.0.1; any other path is a 404."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files_served = files
        self.requests: list[str] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                body = files_served.get(self.path)
                if body is None:
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "application/octet-stream")
                if not isinstance(body, Unsized):
                    size = len(body.body if isinstance(body, Dribble) else body)
                    self.send_header("Content-Length", str(size))
                self.end_headers()
                if isinstance(body, Dribble):
                    stop = threading.Event()
                    for index in range(min(len(body.body), int(body.limit_s / body.interval_s))):
                        try:
                            self.wfile.write(body.body[index : index + 1])
                            self.wfile.flush()
                        except OSError:  # the client hung up
                            return
                        stop.wait(body.interval_s)
                    return
                self.wfile.write(body.body if isinstance(body, Unsized) else body)

            def log_message(self, format, *args):  # keep the test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return BUNDLED_MODEL.read_bytes()


@pytest.fixture
def server(model_bytes):
    half = model_bytes[: len(model_bytes) // 2]
    not_a_model = io.BytesIO()
    with zipfile.ZipFile(not_a_model, "w") as archive:
        archive.writestr("readme.txt", "a zip archive, but no Keras model in it")
    files = {
        "/emotion_cnn.keras": model_bytes,
        "/half.keras": half,
        "/not_a_model.zip": not_a_model.getvalue(),
    }
    with FileServer(files) as running:
        yield running


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No model settings, no proxy for 127.0.0.1, and gdown's lock file under tmp_path."""
    for name in MODEL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(
        importlib.import_module("gdown.cached_download"), "cache_root", str(tmp_path / "gdown")
    )


def secrets_for(url: str, checksum: str | None) -> dict[str, str]:
    return {"MODEL_URL": url} if checksum is None else {"MODEL_URL": url, "MODEL_SHA256": checksum}


def configured(secrets, cache_dir) -> tuple:
    """(path, warning) of the model the app would load with these secrets."""
    loaded = resolve_model(secrets, cache_dir=cache_dir)
    assert loaded.classifier.source == loaded.path
    return loaded.path, loaded.warning


def test_unset_settings_give_the_bundled_model_silently(tmp_path, caplog):
    assert configured({}, cache_dir=tmp_path) == (BUNDLED_MODEL, None)
    assert resolve_model().origin == "bundled"
    assert not caplog.records
    assert list(tmp_path.iterdir()) == []


def test_a_model_with_the_right_checksum_is_downloaded_and_loads(server, model_bytes, tmp_path):
    secrets = secrets_for(server.url("/emotion_cnn.keras"), sha256(model_bytes).upper())
    path, warning = configured(secrets, cache_dir=tmp_path)
    assert warning is None
    assert path == tmp_path / f"{sha256(model_bytes)}.keras"
    assert path.read_bytes() == model_bytes

    # The next start re-hashes the cached file: no new request.
    assert configured(secrets, cache_dir=tmp_path) == (path, None)
    assert server.requests == ["/emotion_cnn.keras"]


def test_resolve_model_returns_the_downloaded_model(server, model_bytes, tmp_path):
    secrets = secrets_for(server.url("/emotion_cnn.keras"), sha256(model_bytes))
    secrets["MODEL_CACHE_DIR"] = str(tmp_path / "from-secrets")
    loaded = resolve_model(secrets)
    assert loaded.warning is None and loaded.origin == "MODEL_URL"
    assert loaded.path == tmp_path / "from-secrets" / f"{sha256(model_bytes)}.keras"
    assert loaded.classifier.source == loaded.path
    assert loaded.classifier.predict_proba(np.zeros((1, 48, 48), np.uint8)).shape == (1, 7)


def test_resolve_model_falls_back_to_the_bundled_model(server, tmp_path):
    loaded = resolve_model(secrets_for(server.url("/missing.keras"), "c" * 64), cache_dir=tmp_path)
    assert loaded.path == BUNDLED_MODEL and loaded.origin == "bundled"
    assert loaded.classifier.source == BUNDLED_MODEL
    assert "HTTP 404" in loaded.warning


def test_not_found_falls_back_with_a_warning(server, model_bytes, tmp_path, caplog):
    secrets = secrets_for(server.url("/missing.keras"), sha256(model_bytes))
    path, warning = configured(secrets, cache_dir=tmp_path)
    assert path == BUNDLED_MODEL
    assert warning.startswith("Could not load the model from MODEL_URL (")
    assert "HTTP 404" in warning
    assert warning.endswith("; using the bundled model.")
    assert "Using the bundled model" in caplog.text
    assert not any(tmp_path.glob("*.keras"))


def test_wrong_checksum_falls_back_and_keeps_no_file(server, tmp_path):
    secrets = secrets_for(server.url("/emotion_cnn.keras"), "0" * 64)
    path, warning = configured(secrets, cache_dir=tmp_path)
    assert path == BUNDLED_MODEL
    assert "checksum is not MODEL_SHA256" in warning
    assert not any(tmp_path.glob("*.keras"))


def test_truncated_file_fails_the_checksum_of_the_full_model(server, model_bytes, tmp_path):
    secrets = secrets_for(server.url("/half.keras"), sha256(model_bytes))
    path, warning = configured(secrets, cache_dir=tmp_path)
    assert path == BUNDLED_MODEL
    assert "checksum is not MODEL_SHA256" in warning
    assert not any(tmp_path.glob("*.keras"))


def test_truncated_file_with_its_own_checksum_is_not_a_model(server, model_bytes, tmp_path):
    half = model_bytes[: len(model_bytes) // 2]
    secrets = secrets_for(server.url("/half.keras"), sha256(half))
    path, warning = configured(secrets, cache_dir=tmp_path)
    assert path == BUNDLED_MODEL
    assert "not a Keras model archive" in warning
    assert not (tmp_path / f"{sha256(half)}.keras").exists()


def test_archive_that_is_not_a_keras_model_is_rejected_by_loading_it(server, tmp_path):
    secrets = secrets_for(server.url("/not_a_model.zip"), sha256(server.files["/not_a_model.zip"]))
    path, warning = configured(secrets, cache_dir=tmp_path)
    assert path == BUNDLED_MODEL
    assert "not a usable emotion model" in warning
    assert not any(tmp_path.glob("*.keras"))


def test_missing_checksum_falls_back(server, tmp_path):
    path, warning = configured(secrets_for(server.url("/emotion_cnn.keras"), None), cache_dir=tmp_path)
    assert path == BUNDLED_MODEL
    assert "MODEL_SHA256 is not set" in warning
    assert server.requests == []


def test_unreachable_server_falls_back(tmp_path, monkeypatch):
    import emotion.remote

    monkeypatch.setattr(emotion.remote, "DOWNLOAD_RETRIES", 0)
    with FileServer({}) as stopped:
        url = stopped.url("/emotion_cnn.keras")
    path, warning = configured(secrets_for(url, "a" * 64), cache_dir=tmp_path)
    assert path == BUNDLED_MODEL
    assert "could not connect to the server" in warning


def test_a_stale_file_under_the_checksum_name_is_replaced(server, model_bytes, tmp_path, monkeypatch):
    stale = tmp_path / f"{sha256(model_bytes)}.keras"
    stale.write_bytes(b"left over from an interrupted copy")
    monkeypatch.setenv("MODEL_URL", server.url("/emotion_cnn.keras"))
    monkeypatch.setenv("MODEL_SHA256", sha256(model_bytes))
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path))
    path = resolve_model().path
    assert path == stale
    assert path.read_bytes() == model_bytes


def test_resolve_model_reads_the_environment(server, model_bytes, tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_URL", server.url("/emotion_cnn.keras"))
    monkeypatch.setenv("MODEL_SHA256", sha256(model_bytes))
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "models"))
    assert resolve_model().path == tmp_path / "models" / f"{sha256(model_bytes)}.keras"

    monkeypatch.setenv("MODEL_URL", server.url("/missing.keras"))
    monkeypatch.setenv("MODEL_SHA256", "b" * 64)
    assert resolve_model().path == BUNDLED_MODEL


@pytest.mark.parametrize(
    ("url", "checksum", "message"),
    [
        ("ftp://example.org/model.keras", "a" * 64, "not an http"),
        ("drive.google.com/file/d/x/view", "a" * 64, "not an http"),
        ("https://example.org/model.keras", "abc", "not a SHA-256 checksum"),
    ],
)
def test_bad_settings_are_explained(url, checksum, message):
    with pytest.raises(ModelDownloadError, match=message):
        ModelSource(url, checksum)


def test_model_source_from_settings_normalises_the_checksum():
    source = ModelSource.from_settings(
        {"MODEL_URL": " https://example.org/m.keras ", "MODEL_SHA256": "SHA256:" + "AB" * 32}
    )
    assert source == ModelSource("https://example.org/m.keras", "ab" * 32)
    with pytest.raises(ModelDownloadError, match="MODEL_URL is not"):
        ModelSource.from_settings({"MODEL_SHA256": "ab" * 32})


def test_google_drive_share_links_are_resolved_by_gdown():
    # Share links go to gdown unchanged: this pins that gdown extracts the id.
    from gdown.parse_url import parse_url

    file_id = "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"
    assert parse_url(f"https://drive.google.com/file/d/{file_id}/view?usp=sharing")[0] == file_id


def test_only_a_caller_that_asks_gets_the_configured_model(server, model_bytes, tmp_path, monkeypatch):
    from emotion import load_classifier, pipeline

    monkeypatch.setenv("MODEL_URL", server.url("/emotion_cnn.keras"))
    monkeypatch.setenv("MODEL_SHA256", sha256(model_bytes))
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(pipeline, "_default_classifier", None)
    assert load_classifier().source == BUNDLED_MODEL
    assert pipeline.analyze_image(np.full((120, 160, 3), 128, np.uint8)) == []
    assert pipeline.default_classifier().source == BUNDLED_MODEL
    assert server.requests == []
    assert resolve_model().path == tmp_path / f"{sha256(model_bytes)}.keras"  # asked for
    assert server.requests == ["/emotion_cnn.keras"]


def rewrite_archive(model: bytes, member: str, content: bytes) -> bytes:
    """The model file with one member's content replaced."""
    rewritten = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(model)) as source, zipfile.ZipFile(rewritten, "w") as target:
        for item in source.infolist():
            target.writestr(item, content if item.filename == member else source.read(item))
    return rewritten.getvalue()


def with_metadata(model: bytes, change) -> bytes:
    with zipfile.ZipFile(io.BytesIO(model)) as archive:
        metadata = json.loads(archive.read(METADATA_MEMBER))
    return rewrite_archive(model, METADATA_MEMBER, json.dumps(change(metadata)).encode())


def with_compression_method(model: bytes, method: int) -> bytes:
    """The model file with every member marked as compressed by `method` (6: "implode", which
    Python's zipfile cannot read), in the local headers and the central directory alike."""
    data = bytearray(model)
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        start = data.find(signature)
        while start != -1:
            data[start + offset : start + offset + 2] = method.to_bytes(2, "little")
            start = data.find(signature, start + 4)
    return bytes(data)


BROKEN_MODELS = {
    "an unsupported compression method": lambda model: with_compression_method(model, 6),
    "runtime that is not a flatbuffer": lambda model: rewrite_archive(model, RUNTIME_MEMBER, b"\0" * 64),
    "classes that are not a list": lambda model: with_metadata(model, lambda m: {**m, "classes": 7}),
    "metadata that is a list": lambda model: with_metadata(model, lambda m: [m]),
    "metadata that is not JSON": lambda model: rewrite_archive(model, METADATA_MEMBER, b"{not json"),
    "classes of another task": lambda model: with_metadata(model, lambda m: {**m, "classes": ["cat", "dog"]}),
}


@pytest.mark.parametrize("broken", BROKEN_MODELS)
def test_every_broken_download_falls_back_to_the_bundled_model_and_is_removed(
    broken, model_bytes, tmp_path, caplog
):
    bad_model = BROKEN_MODELS[broken](model_bytes)
    with FileServer({"/bad.keras": bad_model}) as running:
        secrets = secrets_for(running.url("/bad.keras"), sha256(bad_model))
        with caplog.at_level(logging.WARNING):
            path, warning = configured(secrets, cache_dir=tmp_path)
    assert path == BUNDLED_MODEL
    assert warning.startswith("Could not load the model from MODEL_URL")
    assert str(tmp_path) not in warning  # visitors see no server path
    assert "Using the bundled model" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_a_cache_folder_that_cannot_be_made_is_said_without_its_path(server, model_bytes, tmp_path, caplog):
    (tmp_path / "a file").write_text("not a folder")
    secrets = secrets_for(server.url("/emotion_cnn.keras"), sha256(model_bytes))
    with caplog.at_level(logging.WARNING):
        path, warning = configured(secrets, cache_dir=tmp_path / "a file" / "models")
    assert path == BUNDLED_MODEL and "cannot create a model cache folder" in warning
    assert str(tmp_path) not in warning and str(tmp_path) in caplog.text  # the server's log says where


SECRET_URL_PARTS = ("us3r", "t0ken-in-url", "s1gnature-in-query")


@pytest.mark.parametrize("reachable", [True, False])
def test_no_part_of_a_secret_url_is_shown_or_logged(reachable, model_bytes, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(remote, "DOWNLOAD_RETRIES", 1)
    with FileServer({}) as running:
        address = running.url("/private/model.keras").replace("http://", "http://us3r:t0ken-in-url@")
        url = f"{address}?X-Amz-Signature=s1gnature-in-query&X-Amz-Credential=us3r"
        if reachable:
            with caplog.at_level(logging.INFO):
                loaded = resolve_model(secrets_for(url, sha256(model_bytes)), cache_dir=tmp_path)
    if not reachable:  # the server has stopped: nothing listens there any more
        with caplog.at_level(logging.INFO):
            loaded = resolve_model(secrets_for(url, sha256(model_bytes)), cache_dir=tmp_path)
    assert loaded.path == BUNDLED_MODEL
    assert ("HTTP 404" if reachable else "could not connect") in loaded.warning
    assert "http://127.0.0.1" in loaded.warning
    for secret in SECRET_URL_PARTS:
        assert secret not in loaded.warning
        assert secret not in caplog.text


def test_a_bad_url_setting_is_not_repeated():
    with pytest.raises(ModelDownloadError) as raised:
        ModelSource.from_settings({"MODEL_URL": "drive.google.com/d/s3cret-id", "MODEL_SHA256": "a" * 64})
    assert "s3cret-id" not in str(raised.value)


@pytest.mark.parametrize("announced", [True, False])
def test_a_download_over_the_size_limit_is_cut_off(announced, model_bytes, tmp_path, monkeypatch):
    monkeypatch.setattr(remote, "MAX_MODEL_BYTES", 1000)
    body = model_bytes if announced else Unsized(model_bytes)
    with FileServer({"/big.keras": body}) as running:
        path, warning = configured(secrets_for(running.url("/big.keras"), sha256(model_bytes)), tmp_path)
    assert path == BUNDLED_MODEL
    assert "the file is larger than 0 MB" in warning
    assert list(tmp_path.iterdir()) == []


def test_a_download_that_trickles_is_stopped_at_the_deadline(model_bytes, tmp_path, monkeypatch):
    # One byte every 50 ms: the server never pauses long enough for the between-bytes timeout.
    monkeypatch.setattr(remote, "DOWNLOAD_DEADLINE_S", 0.5)
    with FileServer({"/slow.keras": Dribble(model_bytes)}) as running:
        path, warning = configured(secrets_for(running.url("/slow.keras"), sha256(model_bytes)), tmp_path)
    assert path == BUNDLED_MODEL
    assert "it did not finish within 0.5 s" in warning
    assert list(tmp_path.iterdir()) == []


def test_no_writable_home_folder_is_needed(server, model_bytes, tmp_path, monkeypatch):
    # A home folder that cannot be created (even by root): a regular file is in the way.
    (tmp_path / "file").write_text("in the way")
    home = tmp_path / "file" / "home"
    monkeypatch.setenv("HOME", str(home))
    # gdown read HOME when it was imported; these are the paths it would have made of this one.
    monkeypatch.setattr(importlib.import_module("gdown.cached_download"), "cache_root", str(home / ".cache"))
    monkeypatch.setattr(importlib.import_module("gdown.download"), "DEFAULT_COOKIES_FILE", str(home / "c"))
    temporary = tmp_path / "temp"
    temporary.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temporary))
    secrets = secrets_for(server.url("/emotion_cnn.keras"), sha256(model_bytes))
    path, warning = configured(secrets, cache_dir=None)
    assert warning is None
    assert path == temporary / "emotion-lens-models" / f"{sha256(model_bytes)}.keras"
    assert [item.name for item in path.parent.iterdir()] == [path.name]


def test_the_commands_use_the_model_of_the_secrets_file_and_say_which(
    server, model_bytes, tmp_path, astronaut_rgb, face_clip
):
    """predict, video and batch read MODEL_URL, MODEL_SHA256 and MODEL_CACHE_DIR from
    .streamlit/secrets.toml in the working folder, as the page and serve do."""
    other = tmp_path / "other.keras"  # the bundled model with another checksum
    other.write_bytes(model_bytes)
    with zipfile.ZipFile(other, "a") as archive:
        archive.comment = b"another copy"
    checksum = sha256(other.read_bytes())
    server.files["/other.keras"] = other.read_bytes()
    cache = tmp_path / "cache"
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text(
        f'MODEL_URL = "{server.url("/other.keras")}"\n'
        f'MODEL_SHA256 = "{checksum}"\n'
        f'MODEL_CACHE_DIR = "{cache}"\n'
    )
    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut_rgb).save(photo)

    def run(*args: str) -> str:
        result = run_emotion(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"model: MODEL_URL {checksum}.keras, sha256 {checksum}" in result.stderr
        return result.stdout

    assert json.loads(run("predict", str(photo), "--json"))["faces"]
    run("video", str(face_clip), "--csv", str(tmp_path / "faces.csv"))
    run("batch", str(photo), "--out", str(tmp_path / "batch"), "--processes", "1")
    events = pyarrow.parquet.read_table(tmp_path / "batch" / "events")
    assert set(events.column("model_sha256").to_pylist()) == {checksum}
    assert (cache / f"{checksum}.keras").is_file()
    assert server.requests == ["/other.keras"]  # downloaded once, then taken from the cache
