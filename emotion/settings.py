"""Deployment settings: read from Streamlit secrets or the environment, with safe defaults.

Every setting goes through `get_setting`, so a value can live in `.streamlit/secrets.toml`
(on Streamlit Community Cloud: the app's Secrets box) or in an environment variable, and a
missing or unreadable secrets file simply means "not set". No Streamlit import here: the app
passes `st.secrets`, tests pass a dict.

Settings:
  MODEL_URL, MODEL_SHA256   a model to download at startup (see emotion.remote)
  MODEL_CACHE_DIR           where downloaded models are kept (default ~/.cache/emotion-lens/models)
  ICE_SERVERS, CLOUDFLARE_TURN_KEY_ID, CLOUDFLARE_TURN_KEY_API_TOKEN, TWILIO_ACCOUNT_SID,
  TWILIO_AUTH_TOKEN         the webcam's STUN and TURN servers (see the page's ui.ice)
  HISTORY_PATH, HISTORY_TABLE, HISTORY_PASSWORD
                            the detection log and the History tab (`history_settings`)
  TRUSTED_PROXIES           the reverse proxies whose X-Forwarded-For names a visitor's address,
                            for the History password's throttle (`trusted_proxies`)
  API_KEYS, API_RESULT_TTL_S, API_VIDEO_QUEUE, API_LOG_DETECTIONS
                            the HTTP API's keys, video jobs and detection log (see emotion.api.settings)

No setting's secret part is ever logged or shown: see `redact` and `redact_url`.

Outside Streamlit (the HTTP API), `read_secrets_file` reads the page's `.streamlit/secrets.toml`,
so the API and the page started in the same folder use the same settings, and `upload_limit_mb`
the page's upload limit from its `.streamlit/config.toml`.
"""

from __future__ import annotations

import collections
import hmac
import ipaddress
import logging
import os
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

REDACTED = "***"
SECRETS_FILE = Path(".streamlit") / "secrets.toml"  # where `streamlit run` looks, in the working folder
STREAMLIT_CONFIG = Path(".streamlit") / "config.toml"  # the page's, where `streamlit run` looks, as above
STREAMLIT_UPLOAD_LIMIT_MB = 200  # Streamlit's own default for server.maxUploadSize
DEFAULT_HISTORY_PATH = Path("~/.local/share/emotion-lens/detections.duckdb")  # overridden by HISTORY_PATH


class SettingsError(ValueError):
    """A setting is present but malformed."""


def get_setting(name: str, secrets: Mapping[str, Any] | None = None, default: Any = None) -> Any:
    """The value of setting `name`: from `secrets` first, then the environment, else `default`.

    Empty values count as unset. Any error while reading `secrets` (Streamlit raises
    FileNotFoundError subclasses when there is no secrets file, and parse errors for a broken
    one) also counts as unset.
    """
    if secrets is not None:
        try:
            value = secrets[name]
        except KeyError:
            value = None
        except Exception as error:  # no secrets file, or one that does not parse
            logger.debug("Secrets unavailable while reading %s: %s", name, error)
            value = None
        if not _is_empty(value):
            return value
    value = os.environ.get(name)
    return default if _is_empty(value) else value


def read_secrets_file(path: Path = SECRETS_FILE) -> dict[str, Any]:
    """The settings in a secrets.toml, for use outside Streamlit; {} when there is no such file.

    A file that cannot be read or parsed is logged as a warning and counts as empty, as in
    `get_setting`.
    """
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as error:
        logger.warning("Ignoring %s: %s", path, error)
        return {}


def upload_limit_mb(config: Path = STREAMLIT_CONFIG) -> int:
    """The page's upload limit per file, server.maxUploadSize in its config.toml, for use outside
    Streamlit (the page asks Streamlit). Missing or unreadable: Streamlit's default, with a warning."""
    try:
        with open(config, "rb") as file:
            return int(tomllib.load(file)["server"]["maxUploadSize"])
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as error:
        logger.warning(
            "No server.maxUploadSize in %s (%r); using %d MB", config, error, STREAMLIT_UPLOAD_LIMIT_MB
        )
        return STREAMLIT_UPLOAD_LIMIT_MB


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class HistorySettings(NamedTuple):
    path: Path  # the detection log's DuckDB file
    table: str | None  # a batch command's --out folder, opened read-only in the History tab
    password: str | None  # guards the History tab and its delete button; never shown or logged


def history_settings(secrets: Mapping[str, Any] | None = None) -> HistorySettings:
    """HISTORY_PATH, HISTORY_TABLE and HISTORY_PASSWORD from secrets or the environment."""
    path = Path(str(get_setting("HISTORY_PATH", secrets, DEFAULT_HISTORY_PATH))).expanduser()
    table = get_setting("HISTORY_TABLE", secrets)
    password = get_setting("HISTORY_PASSWORD", secrets)
    return HistorySettings(
        path, None if table is None else str(table), None if password is None else str(password)
    )


def password_matches(entered: str, expected: str) -> bool:
    """Compared in constant time, so the time taken tells nothing about the password."""
    return hmac.compare_digest(entered.encode("utf-8"), expected.encode("utf-8"))


FREE_PASSWORD_ATTEMPTS = 3  # wrong passwords a visitor may enter before having to wait
MAX_PASSWORD_WAIT_S = 300.0  # a visitor's wait doubles with each further wrong one, up to this
SERVER_PASSWORD_ATTEMPTS = 20  # wrong passwords per SERVER_WINDOW_S from all visitors together;
SERVER_WINDOW_S = 60.0  # beyond that a visitor who guessed wrong waits this long after each guess
FORGET_AFTER_S = 3600.0  # a visitor's wrong passwords older than this are forgotten
DEFAULT_TRUSTED_PROXIES = "127.0.0.1, ::1"  # a reverse proxy on the same machine


class PasswordAttempts:
    """Throttles guessing a password, per visitor (a client address) and for the whole server;
    thread-safe.

    Before checking a password, ask `wait_s(visitor)`: while it is above 0 the password must not
    be checked; then report the outcome with `failed` or `succeeded`. `now` is a monotonic clock.
    Past the server's limit, a visitor with a wrong password in the window waits; one without
    gets its try, so that strangers' guesses filling the limit do not lock the owner out.
    """

    def __init__(self, now: Callable[[], float] = time.monotonic):
        self._now = now
        self._lock = threading.Lock()
        self._visitors: dict[str, tuple[int, float]] = {}  # visitor -> (wrong passwords, last one)
        self._server: collections.deque[float] = collections.deque()  # times of recent wrong ones

    def wait_s(self, visitor: str) -> float:
        """Seconds before `visitor` may try a password again; 0: now."""
        with self._lock:
            now = self._now()
            self._forget(now)
            waits = [0.0]
            wrong, last = self._visitors.get(visitor, (0, now))
            if wrong >= FREE_PASSWORD_ATTEMPTS:
                waits.append(last + min(MAX_PASSWORD_WAIT_S, 2.0 ** (wrong - FREE_PASSWORD_ATTEMPTS)) - now)
            if len(self._server) >= SERVER_PASSWORD_ATTEMPTS and wrong:
                waits.append(last + SERVER_WINDOW_S - now)
            return max(waits)

    def failed(self, visitor: str) -> None:
        with self._lock:
            now = self._now()
            wrong, _ = self._visitors.get(visitor, (0, now))
            self._visitors[visitor] = (wrong + 1, now)
            self._server.append(now)

    def succeeded(self, visitor: str) -> None:
        with self._lock:
            self._visitors.pop(visitor, None)

    def _forget(self, now: float) -> None:
        while self._server and self._server[0] <= now - SERVER_WINDOW_S:
            self._server.popleft()
        for visitor, (_, last) in list(self._visitors.items()):
            if last <= now - FORGET_AFTER_S:
                del self._visitors[visitor]


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_proxies(secrets: Mapping[str, Any] | None = None) -> tuple[IpNetwork, ...]:
    """TRUSTED_PROXIES: the addresses or networks (comma-separated) of the reverse proxies in front
    of the page, whose X-Forwarded-For is believed; default this machine's, "none" for none. A
    malformed entry is logged and left out."""
    value = str(get_setting("TRUSTED_PROXIES", secrets, DEFAULT_TRUSTED_PROXIES))
    networks = []
    for entry in filter(None, (entry.strip() for entry in value.split(","))):
        if entry.lower() == "none":
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            logger.warning("Ignoring %r in TRUSTED_PROXIES: not an address or network", entry)
    return tuple(networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple[IpNetwork, ...]) -> str:
    """The visitor's address: the connection's peer (None: this machine, as Streamlit says it), or,
    where the peer is a trusted proxy, the last address in X-Forwarded-For that is not one. What
    a client writes into the header itself is never believed: each proxy appends its peer."""
    address = peer or "127.0.0.1"
    for entry in reversed((forwarded_for or "").split(",")):
        if not _within(address, trusted):
            break
        try:
            address = str(ipaddress.ip_address(entry.strip()))
        except ValueError:  # a malformed entry: the last address believed stands
            break
    return address


def _within(address: str, networks: tuple[IpNetwork, ...]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in networks)


def redact(text: str, *secrets: str) -> str:
    """`text` with every occurrence of each of `secrets` replaced by REDACTED."""
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def redact_url(url: str) -> str:
    """What of `url` can be shown: its scheme and host ("https://example.org/..."), no credentials.

    User names, passwords, tokens and signatures live in the other parts (even a Google Drive
    file id works as a password for files shared with anyone who has the link).
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a malformed port or IPv6 address
        return REDACTED
    if not parts.scheme or not host:
        return REDACTED
    rest = "/..." if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    return f"{parts.scheme}://{host}{port}{rest}"
