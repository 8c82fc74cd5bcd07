"""The webcam's ICE servers: the choice between ICE_SERVERS, Cloudflare, Twilio and public STUN,
and the cache that looks them up in the background."""

from __future__ import annotations

import json
import logging
import socket
import threading

import pytest

from emotion.settings import SettingsError
from tests.conftest import Clock
from tests.test_settings import MissingSecretsFile
from ui import ice
from ui.ice import ICE_RETRY_S, ICE_TTL_S, IceConfiguration, IceServerCache, ice_servers, parse_ice_servers

ICE_SETTINGS = (
    "ICE_SERVERS",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "CLOUDFLARE_TURN_KEY_ID",
    "CLOUDFLARE_TURN_KEY_API_TOKEN",
)
PROXY_SETTINGS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
TURN_SERVER = {"urls": ["turn:turn.example.org:3478"], "username": "user", "credential": "secret"}
CLOUDFLARE_SERVER = {"urls": ["turn:turn.cloudflare.com:3478"], "username": "cf", "credential": "cf-secret"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ICE_SETTINGS:
        monkeypatch.delenv(name, raising=False)


def record_calls(monkeypatch, function: str, server: dict) -> list[tuple[str, str]]:
    """Replace a TURN service's request with a recorder of its calls that returns `server`."""
    calls = []

    def fake_request(key, token):
        calls.append((key, token))
        return [server]

    monkeypatch.setattr(ice, function, fake_request)
    return calls


@pytest.fixture
def twilio_calls(monkeypatch) -> list[tuple[str, str]]:
    return record_calls(monkeypatch, "_twilio_ice_servers", TURN_SERVER)


@pytest.fixture
def cloudflare_calls(monkeypatch) -> list[tuple[str, str]]:
    return record_calls(monkeypatch, "_cloudflare_ice_servers", CLOUDFLARE_SERVER)


class SilentProxy:
    """An HTTP proxy on 127.0.0.1 that accepts connections and never answers.

    `client_hung_up()` tells whether the client gave up on its connection before the proxy
    closed it (after `patience_s`), that is whether the client has a timeout of its own.
    """

    def __init__(self, patience_s: float = 30.0):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._patience_s = patience_s
        self._outcomes: list[bool] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _serve(self) -> None:
        with self._listener:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed by __exit__ before any client came
                return
            with connection:
                connection.settimeout(self._patience_s)
                try:
                    while connection.recv(4096):  # the request, then nothing until the client leaves
                        pass
                    self._outcomes.append(True)
                except TimeoutError:
                    self._outcomes.append(False)

    def client_hung_up(self) -> bool:
        self._thread.join(timeout=self._patience_s + 5)
        return self._outcomes == [True]

    def __enter__(self) -> SilentProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._thread.join(timeout=self._patience_s + 5)
        self._listener.close()


@pytest.fixture
def silent_proxy(monkeypatch):
    """Every HTTPS request of this test goes to a SilentProxy."""
    for name in PROXY_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with SilentProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        yield proxy


def test_explicit_ice_servers_from_json(monkeypatch, twilio_calls):
    monkeypatch.setenv("ICE_SERVERS", json.dumps([TURN_SERVER, {"urls": "stun:stun.example.org"}]))
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "sid")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "token")
    assert ice_servers() == ([TURN_SERVER, {"urls": ["stun:stun.example.org"]}], ICE_TTL_S)
    assert twilio_calls == []


def test_explicit_ice_servers_from_a_secrets_toml_list(twilio_calls):
    assert ice_servers({"ICE_SERVERS": [TURN_SERVER]}).servers == [TURN_SERVER]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[{urls: 'stun:x'}]", "not valid JSON"),
        ("[]", "non-empty list"),
        ('"stun:stun.example.org"', "non-empty list"),
        ('["stun:stun.example.org"]', "not an object"),
        ('[{"username": "u"}]', "has no 'urls'"),
        ('[{"urls": ["http://example.org"]}]', "is not a stun:"),
        ('[{"urls": "turn:turn.example.org"}]', "without 'username' and 'credential'"),
    ],
)
def test_malformed_ice_servers_are_rejected(value, message):
    with pytest.raises(SettingsError, match=message):
        parse_ice_servers(value)


def test_malformed_ice_servers_fall_back_with_a_warning(monkeypatch, caplog, twilio_calls):
    monkeypatch.setenv("ICE_SERVERS", "not json")
    with caplog.at_level(logging.WARNING, logger="ui.ice"):
        servers, _ = ice_servers()
    assert servers == ice.PUBLIC_STUN_SERVERS
    assert "Ignoring ICE_SERVERS: not valid JSON" in caplog.text


def test_twilio_credentials_fetch_turn_servers(twilio_calls):
    configuration = ice_servers({"TWILIO_ACCOUNT_SID": "sid", "TWILIO_AUTH_TOKEN": "token"})
    assert configuration == ([TURN_SERVER], ICE_TTL_S)
    assert twilio_calls == [("sid", "token")]


def test_cloudflare_credentials_fetch_turn_servers_before_twilio(cloudflare_calls, twilio_calls):
    both = {
        "CLOUDFLARE_TURN_KEY_ID": "key-id",
        "CLOUDFLARE_TURN_KEY_API_TOKEN": "api-token",
        "TWILIO_ACCOUNT_SID": "sid",
        "TWILIO_AUTH_TOKEN": "token",
    }
    assert ice_servers(both) == ([CLOUDFLARE_SERVER], ICE_TTL_S)
    assert cloudflare_calls == [("key-id", "api-token")]
    assert twilio_calls == []


def test_a_failed_cloudflare_request_falls_back_to_twilio(monkeypatch, caplog, twilio_calls):
    def failing(key_id, api_token):
        raise ValueError(f"Failed to get credentials for {key_id} with {api_token}")

    monkeypatch.setattr(ice, "_cloudflare_ice_servers", failing)
    secrets = {
        "CLOUDFLARE_TURN_KEY_ID": "key-id",
        "CLOUDFLARE_TURN_KEY_API_TOKEN": "api-token",
        "TWILIO_ACCOUNT_SID": "sid",
        "TWILIO_AUTH_TOKEN": "token",
    }
    with caplog.at_level(logging.WARNING, logger="ui.ice"):
        assert ice_servers(secrets).servers == [TURN_SERVER]
    assert "Could not get TURN credentials from Cloudflare: Failed to get credentials" in caplog.text
    assert "api-token" not in caplog.text
    assert "key-id" not in caplog.text


def test_failed_twilio_request_falls_back_to_stun_for_a_short_while(monkeypatch, caplog):
    def failing(account_sid, auth_token):
        raise RuntimeError(f"HTTP 401 error: /Accounts/{account_sid}/Tokens.json ({auth_token})")

    monkeypatch.setattr(ice, "_twilio_ice_servers", failing)
    with caplog.at_level(logging.WARNING, logger="ui.ice"):
        configuration = ice_servers({"TWILIO_ACCOUNT_SID": "AC-sid", "TWILIO_AUTH_TOKEN": "s3cret"})
    assert configuration == (ice.PUBLIC_STUN_SERVERS, ICE_RETRY_S)
    assert ICE_RETRY_S <= 60
    assert "Could not get TURN credentials from Twilio: HTTP 401 error" in caplog.text
    assert "s3cret" not in caplog.text
    assert "AC-sid" not in caplog.text


def test_twilio_request_gives_up_on_a_server_that_does_not_answer(monkeypatch, silent_proxy, caplog):
    monkeypatch.setattr(ice, "ICE_LOOKUP_TIMEOUT_S", 0.5)
    with caplog.at_level(logging.WARNING, logger="ui.ice"):
        configuration = ice_servers({"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t" * 32})
    assert configuration == (ice.PUBLIC_STUN_SERVERS, ICE_RETRY_S)
    assert "Could not get TURN credentials from Twilio" in caplog.text
    assert silent_proxy.client_hung_up()


def test_cloudflare_request_gives_up_on_a_server_that_does_not_answer(monkeypatch, silent_proxy, caplog):
    import urllib.request

    import streamlit_webrtc.credentials

    monkeypatch.setattr(streamlit_webrtc.credentials, "CRED_REQUEST_TIMEOUT", 0.5)
    monkeypatch.setattr(urllib.request, "_opener", None)  # built again, with the proxy setting
    secrets = {"CLOUDFLARE_TURN_KEY_ID": "k" * 32, "CLOUDFLARE_TURN_KEY_API_TOKEN": "unanswered-token"}
    with caplog.at_level(logging.WARNING, logger="ui.ice"):
        configuration = ice_servers(secrets)
    assert configuration == (ice.PUBLIC_STUN_SERVERS, ICE_RETRY_S)
    assert "Could not get TURN credentials from Cloudflare" in caplog.text
    assert silent_proxy.client_hung_up()


def test_half_configured_services_are_reported(monkeypatch, caplog, twilio_calls, cloudflare_calls):
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "sid")
    monkeypatch.setenv("CLOUDFLARE_TURN_KEY_API_TOKEN", "token")
    with caplog.at_level(logging.WARNING, logger="ui.ice"):
        assert ice_servers().servers == ice.PUBLIC_STUN_SERVERS
    assert "Only one of TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN" in caplog.text
    assert "Only one of CLOUDFLARE_TURN_KEY_ID and CLOUDFLARE_TURN_KEY_API_TOKEN" in caplog.text
    assert twilio_calls == cloudflare_calls == []


def test_nothing_configured_gives_public_stun_and_a_turn_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="ui.ice"):
        servers, ttl_s = ice_servers(MissingSecretsFile())
    assert servers == [{"urls": ["stun:stun.l.google.com:19302"]}]
    assert ttl_s == ICE_TTL_S  # nothing failed: nothing to try again soon
    assert "need a TURN server" in caplog.text
    servers[0]["urls"].append("stun:changed")  # callers get a copy, not the module constant
    assert ice.PUBLIC_STUN_SERVERS == [{"urls": ["stun:stun.l.google.com:19302"]}]


def test_ice_cache_reuses_a_look_up_until_it_expires_and_retries_a_failure_soon():
    clock, results = (
        Clock(),
        [
            IceConfiguration([TURN_SERVER], ICE_TTL_S),
            IceConfiguration(ice.public_stun_servers(), ICE_RETRY_S),
            IceConfiguration([CLOUDFLARE_SERVER], ICE_TTL_S),
        ],
    )
    cache = IceServerCache(lambda: results.pop(0), wait_s=30, clock=clock)
    assert cache.get() == [TURN_SERVER]
    clock.now += ICE_TTL_S - 1
    assert cache.get() == [TURN_SERVER]  # no second look-up
    assert len(results) == 2

    clock.now += 2
    assert cache.get() == ice.PUBLIC_STUN_SERVERS  # the look-up failed
    clock.now += ICE_RETRY_S - 1
    assert cache.get() == ice.PUBLIC_STUN_SERVERS
    assert len(results) == 1
    clock.now += 2
    assert cache.get() == [CLOUDFLARE_SERVER]  # tried again within a minute
    assert results == []


def test_a_slow_ice_look_up_stalls_no_page():
    release, started = threading.Event(), []

    def slow_lookup() -> IceConfiguration:
        started.append(True)
        release.wait()
        return IceConfiguration([TURN_SERVER], ICE_TTL_S)

    clock = Clock()
    cache = IceServerCache(slow_lookup, wait_s=0.05, clock=clock)
    try:
        # Two visitors while the look-up hangs: each goes on with public STUN, one look-up runs.
        assert cache.get() == ice.PUBLIC_STUN_SERVERS
        assert cache.get() == ice.PUBLIC_STUN_SERVERS
        assert started == [True]
    finally:
        release.set()
    for _ in range(200):  # the background look-up finishes soon after its release
        if cache.get() == [TURN_SERVER]:
            break
        threading.Event().wait(0.05)
    assert cache.get() == [TURN_SERVER]
    assert started == [True]

    # When they go stale, visitors get the previous servers while the next look-up hangs.
    release.clear()
    clock.now += ICE_TTL_S + 1
    try:
        assert cache.get() == [TURN_SERVER]
        assert started == [True, True]
    finally:
        release.set()
