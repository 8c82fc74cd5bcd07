"""Deployment settings: read from Streamlit secrets or the environment, with safe defaults.

Every setting goes through `get_setting`, so a value can live in `.streamlit/secrets.toml`
(on Streamlit Community Cloud: the app's Secrets box) or in an environment variable, and a
missing or unreadable secrets file simply means "not set". No Streamlit import here: the app
passes `st.secrets`, tests pass a dict.

Settings:
  MODEL_URL, MODEL_SHA256   a model to download at startup (see emotion.remote)
  MODEL_CACHE_DIR           where downloaded models are kept (default ~/.cache/emotion-lens/models)
  ICE_SERVERS               JSON list of RTCIceServer dicts for the webcam's WebRTC connection
  CLOUDFLARE_TURN_KEY_ID, CLOUDFLARE_TURN_KEY_API_TOKEN
                            fetch Cloudflare TURN credentials instead
  TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN
                            fetch Twilio TURN credentials instead
  HISTORY_PATH, HISTORY_TABLE, HISTORY_PASSWORD
                            the detection log and the History tab (see emotion.history)
  API_KEYS, API_RESULT_TTL_S, API_VIDEO_QUEUE
                            the HTTP API's keys and video jobs (see emotion.api.settings)

No setting's secret part is ever logged or shown: see `redact` and `redact_url`.

Outside Streamlit (the HTTP API), `read_secrets_file` reads the page's `.streamlit/secrets.toml`,
so the API and the page started in the same folder use the same settings, and `upload_limit_mb`
the page's upload limit from its `.streamlit/config.toml`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

# Google's public STUN server: enough when both ends can reach each other directly, which
# most home networks allow; corporate and mobile networks with strict NATs need a TURN relay.
PUBLIC_STUN_SERVERS = [{"urls": ["stun:stun.l.google.com:19302"]}]
ICE_URL_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")
ICE_LOOKUP_TIMEOUT_S = 10  # per request to Twilio, as streamlit-webrtc's Cloudflare request has
ICE_TTL_S = 3000  # fetched credentials are reused for 50 minutes, under their one-hour lifetime
ICE_RETRY_S = 30  # after a failed look-up, the fallback is used this long, then it is tried again
ICE_WAIT_S = 3.0  # a page waits at most this long for a look-up, then goes on without it
TWILIO_CREDENTIAL_TTL_S = 3600  # asked of Twilio: one hour
REDACTED = "***"
SECRETS_FILE = Path(".streamlit") / "secrets.toml"  # where `streamlit run` looks, in the working folder
STREAMLIT_CONFIG = Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml"  # the page's
STREAMLIT_UPLOAD_LIMIT_MB = 200  # Streamlit's own default for server.maxUploadSize


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


class IceConfiguration(NamedTuple):
    servers: list[dict]  # RTCIceServer dicts
    ttl_s: float  # how long they may be reused: ICE_RETRY_S after a failed look-up


def ice_servers(secrets: Mapping[str, Any] | None = None) -> IceConfiguration:
    """The webcam's RTCIceServer dicts: ICE_SERVERS, else Cloudflare TURN, else Twilio TURN, else STUN.

    A malformed ICE_SERVERS or a failed look-up is logged as a warning (without the secrets) and
    the next option is used, so the webcam always gets a configuration; after a failure it is
    only kept for ICE_RETRY_S. Each look-up gives up after about ICE_LOOKUP_TIMEOUT_S.
    """
    configured = get_setting("ICE_SERVERS", secrets)
    if configured is not None:
        try:
            return IceConfiguration(parse_ice_servers(configured), ICE_TTL_S)
        except SettingsError as error:
            logger.warning("Ignoring ICE_SERVERS: %s", error)

    failed = configured is not None
    for service, names, fetch in (
        ("Cloudflare", ("CLOUDFLARE_TURN_KEY_ID", "CLOUDFLARE_TURN_KEY_API_TOKEN"), _cloudflare_ice_servers),
        ("Twilio", ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"), _twilio_ice_servers),
    ):
        key, token = (get_setting(name, secrets) for name in names)
        if key and token:
            try:
                return IceConfiguration(fetch(str(key), str(token)), ICE_TTL_S)
            except Exception as error:  # network, bad credentials, or a library not installed
                reason = redact(str(error) or type(error).__name__, str(key), str(token))
                logger.warning("Could not get TURN credentials from %s: %s", service, reason)
                failed = True
        elif key or token:
            logger.warning("Only one of %s and %s is set; %s is not used.", *names, service)

    logger.warning(
        "Using public STUN only (%s). Webcam users behind strict NATs (corporate or mobile "
        "networks) need a TURN server: set ICE_SERVERS, CLOUDFLARE_TURN_KEY_ID/_API_TOKEN or "
        "TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN.",
        PUBLIC_STUN_SERVERS[0]["urls"][0],
    )
    return IceConfiguration(public_stun_servers(), ICE_RETRY_S if failed else ICE_TTL_S)


def public_stun_servers() -> list[dict]:
    """A copy of PUBLIC_STUN_SERVERS, which callers may change."""
    return [dict(server, urls=list(server["urls"])) for server in PUBLIC_STUN_SERVERS]


class IceServerCache:
    """ICE servers shared by every visitor: looked up in the background, never under a lock.

    `get` returns at once while the last look-up is fresh. Otherwise it starts one look-up (a
    second caller joins the one running) and waits for it at most `wait_s`; a caller that
    stops waiting gets the previous servers while they are still valid, else public STUN.
    So a slow Twilio or Cloudflare costs a page at most `wait_s`, whoever started it.
    """

    def __init__(
        self,
        lookup: Callable[[], IceConfiguration],
        wait_s: float = ICE_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._lookup = lookup
        self._wait_s = wait_s
        self._clock = clock
        self._lock = threading.Lock()  # guards the fields below; never held during a look-up
        self._servers: list[dict] | None = None
        self._fresh_until = 0.0
        self._valid_until = 0.0  # fetched credentials outlive their reuse by ICE_RETRY_S at least
        self._running: threading.Event | None = None

    def get(self) -> list[dict]:
        with self._lock:
            if self._servers is not None and self._clock() < self._fresh_until:
                return _copy(self._servers)
            if self._running is None:
                self._running = threading.Event()
                threading.Thread(target=self._refresh, args=(self._running,), daemon=True).start()
            running = self._running
        running.wait(self._wait_s)
        with self._lock:
            if self._servers is not None and self._clock() < self._valid_until:
                return _copy(self._servers)
        return public_stun_servers()

    def _refresh(self, done: threading.Event) -> None:
        try:
            configuration = self._lookup()
        except Exception as error:  # ice_servers catches what it expects; anything else still ends here
            logger.warning("Looking up the ICE servers failed: %s", type(error).__name__)
            configuration = IceConfiguration(public_stun_servers(), ICE_RETRY_S)
        with self._lock:
            now = self._clock()
            self._servers = configuration.servers
            self._fresh_until = now + configuration.ttl_s
            self._valid_until = self._fresh_until + ICE_RETRY_S
            self._running = None
        done.set()


def _copy(servers: list[dict]) -> list[dict]:
    return [dict(server) for server in servers]


def parse_ice_servers(value: Any) -> list[dict]:
    """Validate ICE_SERVERS: a JSON string (or, from secrets.toml, a list) of RTCIceServer dicts."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise SettingsError(f"not valid JSON ({error})") from error
    if isinstance(value, Mapping):
        value = [value]  # a single server is a common shorthand
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise SettingsError('expected a non-empty list like [{"urls": ["stun:stun.example.org:3478"]}]')
    servers = []
    for index, server in enumerate(value):
        if not isinstance(server, Mapping):
            raise SettingsError(f"server {index} is {type(server).__name__}, not an object")
        server = dict(server)  # secrets.toml tables arrive as read-only mappings
        urls = server.get("urls")
        url_list = [urls] if isinstance(urls, str) else urls
        if not isinstance(url_list, Sequence) or not url_list:
            raise SettingsError(f"server {index} has no 'urls'")
        for url in url_list:
            if not isinstance(url, str) or not url.startswith(ICE_URL_SCHEMES):
                raise SettingsError(f"server {index}: {url!r} is not a stun:, stuns:, turn: or turns: url")
        if any(url.startswith(("turn:", "turns:")) for url in url_list) and not (
            server.get("username") and server.get("credential")
        ):
            raise SettingsError(f"server {index} is a TURN server without 'username' and 'credential'")
        server["urls"] = list(url_list)
        servers.append(server)
    return servers


def _twilio_ice_servers(account_sid: str, auth_token: str) -> list[dict]:
    # streamlit-webrtc's Twilio helper waits for an answer forever; this asks with a timeout.
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=ICE_LOOKUP_TIMEOUT_S))
    token = client.tokens.create(ttl=TWILIO_CREDENTIAL_TTL_S)
    return [dict(server) for server in token.ice_servers]


def _cloudflare_ice_servers(key_id: str, api_token: str) -> list[dict]:
    # streamlit-webrtc's helper (a 10 s timeout, two-hour credentials), without the st.cache_data
    # around it: IceServerCache keeps the answer, and the cache's spinner needs a page to draw
    # on, which the background look-up has not. Imported here because streamlit_webrtc pulls in
    # Streamlit and aiortc.
    from streamlit_webrtc.credentials import get_cloudflare_ice_servers

    return [dict(server) for server in get_cloudflare_ice_servers.__wrapped__(key_id, api_token)]


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
