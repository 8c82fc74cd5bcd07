"""Use a model published somewhere else (Google Drive, a release asset) instead of the bundled one.

Set MODEL_URL and MODEL_SHA256 (secrets or environment, see emotion.settings). At startup the
file is downloaded once with gdown into a cache folder, named by its checksum so a stale or
wrong file is never reused, checked against MODEL_SHA256 and loaded once to prove it is a
7-emotion classifier. Whatever goes wrong (network, 404, Drive quota, wrong checksum, a file
that is not a model) the app falls back to the bundled model and shows why.

The app calls `load_configured_classifier` once (under st.cache_resource): the load that
validates a downloaded model is the one it gets back. `default_model_path` is for callers that
load the model themselves (the command line). Nothing else in the engine downloads: without a
model named, `emotion.load_classifier` and `analyze_image` use the bundled one.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

from emotion.classifier import BUNDLED_MODEL, EmotionClassifier, ModelError, load_classifier
from emotion.labels import EMOTIONS
from emotion.model_file import read_metadata
from emotion.settings import get_setting

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("~/.cache/emotion-lens/models")  # overridden by MODEL_CACHE_DIR
DOWNLOAD_TIMEOUT_S = (10, 60)  # (connect, between bytes): a stalled server must not hang the app's start
DOWNLOAD_RETRIES = 2  # extra attempts for transient network failures; gdown resumes the transfer
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


class ModelDownloadError(RuntimeError):
    """The model in MODEL_URL could not be downloaded, verified or loaded."""


@dataclass(frozen=True)
class ModelSource:
    """Where to download the model from and the SHA-256 (64 hex digits) it must have."""

    url: str
    sha256: str

    def __post_init__(self) -> None:
        if urlparse(self.url).scheme not in ("http", "https") or not urlparse(self.url).netloc:
            raise ModelDownloadError(f"MODEL_URL {self.url!r} is not an http(s) address")
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


class LoadedModel(NamedTuple):
    classifier: EmotionClassifier
    path: Path
    warning: str | None


def normalize_sha256(sha256: str) -> str:
    """Accept 'ABC...', 'abc...' or 'sha256:abc...' (gdown's spelling)."""
    sha256 = sha256.strip().lower()
    return sha256.removeprefix("sha256:")


def load_configured_classifier(
    secrets: Mapping[str, Any] | None = None, cache_dir: str | Path | None = None
) -> LoadedModel:
    """(classifier, path, warning): MODEL_URL's model when configured and usable, else the bundled one.

    Unset settings give the bundled model and no warning. Any failure with MODEL_URL is logged
    and gives the bundled model with a warning the page can show. The model is loaded once.
    """
    try:
        source = ModelSource.from_settings(secrets)
        if source is not None:
            path, classifier = _fetch(source, cache_dir, secrets, load=True)
            return LoadedModel(classifier, path, None)
        warning = None
    except ModelDownloadError as error:
        warning = _fallback_warning(error)
    return LoadedModel(load_classifier(BUNDLED_MODEL), BUNDLED_MODEL, warning)


def default_model_path() -> Path:
    """The configured model's file, for a caller that loads it itself (the command line):
    MODEL_URL's (environment only) if it downloads, else the bundled one.

    The downloaded file is checked (checksum, readable archive) but not loaded here, because
    the caller loads it next.
    """
    try:
        source = ModelSource.from_settings()
        if source is None:
            return BUNDLED_MODEL
        path, _ = _fetch(source, None, None, load=False)
        return path
    except ModelDownloadError as error:
        _fallback_warning(error)
        return BUNDLED_MODEL


def _fallback_warning(error: ModelDownloadError) -> str:
    logger.warning("Using the bundled model: %s", error)
    return f"Could not load the model from MODEL_URL ({error}); using the bundled model."


def _fetch(
    source: ModelSource,
    cache_dir: str | Path | None,
    secrets: Mapping[str, Any] | None,
    *,
    load: bool,
) -> tuple[Path, EmotionClassifier | None]:
    """Download and verify `source`; with `load`, also load the classifier and return it."""
    cache_dir = Path(cache_dir or get_setting("MODEL_CACHE_DIR", secrets, DEFAULT_CACHE_DIR)).expanduser()
    path = cache_dir / f"{source.sha256}.keras"  # Keras only loads files named *.keras
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ModelDownloadError(f"cannot create the model cache folder {cache_dir}: {error}") from error

    _download(source, path)
    _check_archive(path)
    if not load:
        return path, None
    try:
        classifier = load_classifier(path)
    except ModelError as error:
        _remove(path)
        raise ModelDownloadError(f"the downloaded file is not a usable emotion model: {error}") from error
    logger.info("Using the model downloaded from %s (sha256 %s)", source.url, source.sha256)
    return path, classifier


def _download(source: ModelSource, path: Path) -> None:
    import gdown  # with requests, only needed when a remote model is configured

    # Drive needs cookies for its download confirmation; elsewhere they would only be
    # written to gdown's cookie file for nothing.
    is_google_drive = urlparse(source.url).hostname in ("drive.google.com", "docs.google.com")
    try:
        # gdown turns Drive share links (.../file/d/<id>/view?usp=sharing) into download
        # links itself, downloads into a temporary file next to `path`, checks the hash
        # while writing and only then moves it to `path`; a cached `path` is re-hashed.
        gdown.cached_download(
            source.url,
            path=str(path),
            hash=f"sha256:{source.sha256}",
            quiet=True,
            timeout=DOWNLOAD_TIMEOUT_S,
            retries=DOWNLOAD_RETRIES,
            use_cookies=is_google_drive,
        )
    except AssertionError as error:  # gdown reports a checksum mismatch this way
        _remove(path)
        actual = _first_line_matching(str(error), "actual:")
        raise ModelDownloadError(
            f"the file's checksum is not MODEL_SHA256 {source.sha256[:12]}...{actual}"
        ) from error
    except Exception as error:  # requests and gdown raise many types for a failed download
        _remove(path)
        raise ModelDownloadError(f"download from {source.url} failed: {_describe(error)}") from error


def _check_archive(path: Path) -> None:
    """Cheap proof that `path` is a complete Keras archive for our classes, before loading it."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
        metadata = read_metadata(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        _remove(path)
        raise ModelDownloadError(f"the downloaded file is not a Keras model archive: {error}") from error
    if damaged is not None:
        _remove(path)
        raise ModelDownloadError(f"the downloaded file is damaged (bad member {damaged})")
    classes = tuple(metadata.get("classes", EMOTIONS))
    if classes != EMOTIONS:
        _remove(path)
        raise ModelDownloadError(f"the downloaded model predicts {classes}, not {EMOTIONS}")


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        logger.warning("Could not remove %s: %s", path, error)


def _first_line_matching(text: str, prefix: str) -> str:
    for line in text.splitlines():
        if line.strip().startswith(prefix):
            return f" ({line.strip()})"
    return ""


def _describe(error: Exception) -> str:
    """A one-line reason a person can act on."""
    import requests
    from gdown.exceptions import FileURLRetrievalError

    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"HTTP {error.response.status_code} {error.response.reason}"
    if isinstance(error, requests.Timeout):
        return "the server did not answer in time"
    if isinstance(error, requests.ConnectionError):
        return "could not connect to the server"
    if isinstance(error, FileURLRetrievalError):
        return (
            "Google Drive refused the download (is the file shared with 'Anyone with the link'? "
            "Drive also limits how often a file can be downloaded per day)"
        )
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__
