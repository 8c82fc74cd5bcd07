"""The webcam's ICE servers (STUN, and TURN relays for strict networks) from the settings.

ICE_SERVERS, else TURN credentials fetched from Cloudflare, else from Twilio, else Google's public
STUN server. Fetched credentials are looked up in the background and shared by every visitor
(`ice_server_cache`), so a slow TURN service never holds up a page.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import streamlit as st

from emotion.settings import SettingsError, get_setting, redact

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


@st.cache_resource(show_spinner=False)
def ice_server_cache() -> IceServerCache:
    """The webcam's ICE servers, shared by every visitor and refreshed in the background."""
    return IceServerCache(lambda: ice_servers(st.secrets))


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
