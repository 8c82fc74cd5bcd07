"""Deployment settings: read from Streamlit secrets or the environment, with safe defaults.

Every setting goes through `get_setting`, so a value can live in `.streamlit/secrets.toml`
(on Streamlit Community Cloud: the app's Secrets box) or in an environment variable, and a
missing or unreadable secrets file simply means "not set". No Streamlit import here: the app
passes `st.secrets`, tests pass a dict.

Settings:
  MODEL_URL, MODEL_SHA256   a model to download at startup (see emotion.remote)
  MODEL_CACHE_DIR           where downloaded models are kept (default ~/.cache/emotion-lens/models)
  ICE_SERVERS               JSON list of RTCIceServer dicts for the webcam's WebRTC connection
  TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN
                            fetch Twilio TURN credentials instead
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

# Google's public STUN server: enough when both ends can reach each other directly, which
# most home networks allow; corporate and mobile networks with strict NATs need a TURN relay.
PUBLIC_STUN_SERVERS = [{"urls": ["stun:stun.l.google.com:19302"]}]
ICE_URL_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


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


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def ice_servers(secrets: Mapping[str, Any] | None = None) -> list[dict]:
    """The RTCIceServer dicts for the webcam: ICE_SERVERS, else Twilio TURN, else public STUN.

    A malformed ICE_SERVERS or a failed Twilio request is logged as a warning and the next
    option is used, so the webcam always gets a configuration.
    """
    configured = get_setting("ICE_SERVERS", secrets)
    if configured is not None:
        try:
            return parse_ice_servers(configured)
        except SettingsError as error:
            logger.warning("Ignoring ICE_SERVERS: %s", error)

    account_sid = get_setting("TWILIO_ACCOUNT_SID", secrets)
    auth_token = get_setting("TWILIO_AUTH_TOKEN", secrets)
    if account_sid and auth_token:
        try:
            return _twilio_ice_servers(str(account_sid), str(auth_token))
        except Exception as error:  # network, bad credentials, or `twilio` not installed
            logger.warning("Could not get TURN credentials from Twilio: %s", error)
    elif account_sid or auth_token:
        logger.warning("Only one of TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN is set; Twilio is not used.")

    logger.warning(
        "Using public STUN only (%s). Webcam users behind strict NATs (corporate or mobile "
        "networks) need a TURN server: set ICE_SERVERS or TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN.",
        PUBLIC_STUN_SERVERS[0]["urls"][0],
    )
    return [dict(server, urls=list(server["urls"])) for server in PUBLIC_STUN_SERVERS]


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
    # streamlit-webrtc's helper (cached for its credentials' one-hour lifetime); imported here
    # because streamlit_webrtc pulls in Streamlit and aiortc.
    from streamlit_webrtc.credentials import get_twilio_ice_servers

    return [dict(server) for server in get_twilio_ice_servers(account_sid, auth_token)]
