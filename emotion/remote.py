"""Use a model published somewhere else (Google Drive, a release asset) instead of the bundled one.

Set MODEL_URL and MODEL_SHA256 (secrets or environment, see emotion.settings). At startup the
file is downloaded once with gdown into a cache folder, named by its checksum so a stale or
wrong file is never reused, checked against MODEL_SHA256 and loaded once to prove it is a
7-emotion classifier. The download is bounded: at most MAX_MODEL_BYTES, within about
DOWNLOAD_DEADLINE_S, and it writes nothing outside the cache folder (no writable home folder
is needed). Whatever goes wrong (network, 404, Drive quota, wrong checksum, too large, too
slow, a file that is not a model) the app falls back to the bundled model, removes the bad
file and says why, without the URL's credentials (see emotion.settings.redact_url).

Every entry point (the page, the HTTP API, the command line's predict, video, batch and serve)
gets its model from `resolve_model`, with the settings of `.streamlit/secrets.toml` (the page:
st.secrets) and the environment: a model file named by the caller (`--model`), else MODEL_URL's,
else the bundled one. The load that validates a downloaded model is the one it gets back, and
`LoadedModel.description` says which model it is (origin, file, SHA-256) for the entry point to
report. Nothing else in the engine downloads: without a model named, `emotion.load_classifier`
and `analyze_image` use the bundled one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import urlparse

from emotion.classifier import BUNDLED_MODEL, EmotionClassifier, ModelError, load_classifier
from emotion.labels import EMOTIONS
from emotion.model_file import read_model_metadata
from emotion.settings import get_setting, redact, redact_url

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("~/.cache/emotion-lens/models")  # overridden by MODEL_CACHE_DIR
FALLBACK_CACHE_DIR = "emotion-lens-models"  # in the temporary folder, when the home folder is read-only
DOWNLOAD_TIMEOUT_S = (10, 60)  # (connect, between bytes): a stalled server must not hang the app's start
DOWNLOAD_RETRIES = 2  # extra attempts for transient network failures; gdown resumes the transfer
DOWNLOAD_DEADLINE_S = 120  # the whole download, retries included: visitors see a spinner meanwhile
MAX_MODEL_BYTES = 100 * 1024 * 1024  # 100 MB: the shipped model is 9 MB; larger downloads are cut off
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


class ModelDownloadError(RuntimeError):
    """The model in MODEL_URL could not be downloaded, verified or loaded."""


class _TooLarge(Exception):
    """Raised from gdown's progress callback to stop a download over MAX_MODEL_BYTES."""


@dataclass(frozen=True)
class ModelSource:
    """Where to download the model from and the SHA-256 (64 hex digits) it must have."""

    url: str
    sha256: str

    def __post_init__(self) -> None:
        if urlparse(self.url).scheme not in ("http", "https") or not urlparse(self.url).netloc:
            raise ModelDownloadError("MODEL_URL is not an http(s) address")
        if not SHA256_PATTERN.fullmatch(self.sha256):
            raise ModelDownloadError(
                f"MODEL_SHA256 {self.sha256!r} is not a SHA-256 checksum (64 hex digits, "
                "as printed by `sha256sum emotion_cnn.keras`)"
            )

    @classmethod
    def from_settings(cls, secrets: Mapping[str, Any] | None = None) -> ModelSource | None:
        """The configured source; None when MODEL_URL and MODEL_SHA256 are both unset."""
        url = get_setting("MODEL_URL", secrets)
        sha256 = get_setting("MODEL_SHA256", secrets)
        if url is None and sha256 is None:
            return None
        if url is None:
            raise ModelDownloadError("MODEL_SHA256 is set but MODEL_URL is not")
        if sha256 is None:
            raise ModelDownloadError(
                "MODEL_SHA256 is not set; it is required so that a wrong or altered file is never used"
            )
        return cls(url=str(url).strip(), sha256=normalize_sha256(str(sha256)))


ModelOrigin = Literal["bundled", "MODEL_URL", "file"]  # "file": named by the caller (--model)


class LoadedModel(NamedTuple):
    classifier: EmotionClassifier
    origin: ModelOrigin
    warning: str | None  # why MODEL_URL's model is not used, in words for the page

    @property
    def path(self) -> Path:
        return self.classifier.source

    @property
    def description(self) -> str:
        """Which model this is, for a log line: origin, file name and SHA-256."""
        return f"{self.origin} {self.path.name}, sha256 {self.classifier.sha256}"


def normalize_sha256(sha256: str) -> str:
    """Accept 'ABC...', 'abc...' or 'sha256:abc...' (gdown's spelling)."""
    sha256 = sha256.strip().lower()
    return sha256.removeprefix("sha256:")


def resolve_model(
    secrets: Mapping[str, Any] | None = None,
    model_file: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> LoadedModel:
    """The model an entry point uses, loaded once: `model_file` when given, else MODEL_URL's when
    configured (in `secrets` or the environment) and usable, else the bundled one.

    A model file that cannot be loaded raises ModelError. Any failure with MODEL_URL is logged
    and gives the bundled model with a warning the page can show.
    """
    if model_file is not None:
        loaded = LoadedModel(load_classifier(model_file), "file", None)
    else:
        loaded = _configured_model(secrets, cache_dir)
    logger.info("Model: %s", loaded.description)
    return loaded


def _configured_model(secrets: Mapping[str, Any] | None, cache_dir: str | Path | None) -> LoadedModel:
    try:
        source = ModelSource.from_settings(secrets)
        if source is not None:
            return LoadedModel(_fetch(source, cache_dir, secrets), "MODEL_URL", None)
        warning = None
    except ModelDownloadError as error:
        warning = _fallback_warning(error)
    return LoadedModel(load_classifier(BUNDLED_MODEL), "bundled", warning)


def _fallback_warning(error: ModelDownloadError) -> str:
    logger.warning("Using the bundled model: %s", error)
    return f"Could not load the model from MODEL_URL ({error}); using the bundled model."


def _fetch(
    source: ModelSource, cache_dir: str | Path | None, secrets: Mapping[str, Any] | None
) -> EmotionClassifier:
    """Download, verify and load `source`."""
    path = _cache_dir(cache_dir, secrets) / f"{source.sha256}.keras"  # Keras only loads *.keras files
    _download(source, path)
    _check_archive(path)
    try:
        classifier = load_classifier(path)
    except ModelError as error:
        _remove(path)
        logger.warning("%s", error)  # with the file's path, for the server's log only
        raise ModelDownloadError(
            f"the downloaded file is not a usable emotion model: {redact(str(error), str(path))}"
        ) from error
    logger.info("Using the model downloaded from %s (sha256 %s)", redact_url(source.url), source.sha256)
    return classifier


def _cache_dir(cache_dir: str | Path | None, secrets: Mapping[str, Any] | None) -> Path:
    """The first of the configured or default cache folders that exists or can be created."""
    configured = cache_dir or get_setting("MODEL_CACHE_DIR", secrets)
    if configured:
        candidates = [Path(configured).expanduser()]
    else:
        candidates = [DEFAULT_CACHE_DIR.expanduser(), Path(tempfile.gettempdir()) / FALLBACK_CACHE_DIR]
    errors = []
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        except OSError as error:
            errors.append(f"{folder}: {error.strerror or error}")
    logger.warning("Cannot create a model cache folder: %s", "; ".join(errors))  # paths for the server's log
    raise ModelDownloadError(
        "cannot create a model cache folder (MODEL_CACHE_DIR; the server's log says where)"
    )


def _download(source: ModelSource, path: Path) -> None:
    """Put the file with `source.sha256` at `path`: the cached one if intact, else a new download."""
    if path.is_file() and _file_sha256(path) == source.sha256:
        return
    _remove(path)
    import gdown  # with requests, only needed when a remote model is configured

    # Drive needs cookies for its download confirmation; they are kept in the staging folder,
    # like everything else the download writes, and go with it.
    is_google_drive = urlparse(source.url).hostname in ("drive.google.com", "docs.google.com")
    deadline = threading.Event()
    timer = threading.Timer(DOWNLOAD_DEADLINE_S, deadline.set)
    timer.daemon = True
    hasher = hashlib.sha256()
    try:
        with tempfile.TemporaryDirectory(prefix=".download-", dir=path.parent) as staging:
            staged = Path(staging) / "model.keras"
            timer.start()
            # gdown turns Drive share links (.../file/d/<id>/view?usp=sharing) into download
            # links itself, hashes while writing, and stops when `cancel` is set.
            gdown.download(
                source.url,
                output=str(staged),
                quiet=True,
                use_cookies=is_google_drive,
                cookies_file=str(Path(staging) / "cookies.txt"),
                hasher=hasher,
                progress=_refuse_over_max_size,
                timeout=DOWNLOAD_TIMEOUT_S,
                retries=DOWNLOAD_RETRIES,
                cancel=deadline,
            )
            if hasher.hexdigest() != source.sha256:
                raise ModelDownloadError(
                    f"the file's checksum is not MODEL_SHA256 {source.sha256[:12]}... "
                    f"(actual: {hasher.hexdigest()})"
                )
            os.replace(staged, path)
    except ModelDownloadError:
        raise
    except Exception as error:  # requests and gdown raise many types for a failed download
        reason = f"it did not finish within {DOWNLOAD_DEADLINE_S} s" if deadline.is_set() else None
        raise ModelDownloadError(
            f"download from {redact_url(source.url)} failed: {reason or _describe(error, source.url)}"
        ) from error
    finally:
        timer.cancel()


def _refuse_over_max_size(received: int, total: int | None) -> None:
    if received > MAX_MODEL_BYTES or (total or 0) > MAX_MODEL_BYTES:
        raise _TooLarge


def _file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def _check_archive(path: Path) -> None:
    """Cheap proof that `path` is a complete Keras archive for our classes, before loading it."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
        metadata = read_model_metadata(path)
    except Exception as error:  # zipfile raises many types (NotImplementedError: a compression method)
        _remove(path)
        raise ModelDownloadError(
            f"the downloaded file is not a Keras model archive we can read: {redact(str(error), str(path))}"
        ) from error
    if damaged is not None:
        _remove(path)
        raise ModelDownloadError(f"the downloaded file is damaged (bad member {damaged})")
    if metadata.classes != EMOTIONS:
        _remove(path)
        raise ModelDownloadError(f"the downloaded model predicts {metadata.classes}, not {EMOTIONS}")


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        logger.warning("Could not remove %s: %s", path, error)


def _describe(error: BaseException, url: str) -> str:
    """A one-line reason a person can act on, without anything of `url` beyond its host."""
    import requests
    from gdown.exceptions import FileURLRetrievalError

    for cause in _causes(error):
        if isinstance(cause, _TooLarge):
            return f"the file is larger than {MAX_MODEL_BYTES / 1e6:.0f} MB"
        if isinstance(cause, requests.HTTPError) and cause.response is not None:
            return f"HTTP {cause.response.status_code} {cause.response.reason}"
        if isinstance(cause, requests.Timeout):
            return "the server did not answer in time"
        if isinstance(cause, requests.ConnectionError):
            return "could not connect to the server"
        if isinstance(cause, FileURLRetrievalError):
            return (
                "Google Drive refused the download (is the file shared with 'Anyone with the link'? "
                "Drive also limits how often a file can be downloaded per day)"
            )
    # Messages of other errors may quote the address, with its query, anywhere in them.
    parts = urlparse(url)
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    secrets = (url, parts.query, parts.fragment, parts.username or "", parts.password or "")
    first_line = redact(first_line, *secrets)
    first_line = _URL_IN_TEXT.sub("...", first_line)
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__


_URL_IN_TEXT = re.compile(r"\S*(?:://|[/?@])\S*")  # any word with a path, a query or user info


def _causes(error: BaseException):
    """`error` and what caused it, outermost first (gdown wraps requests' errors)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__
