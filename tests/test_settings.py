"""Settings from secrets or the environment, and the ICE server choice for the webcam."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping

import pytest

from emotion import settings
from emotion.settings import SettingsError, get_setting, ice_servers, parse_ice_servers

ICE_SETTINGS = ("ICE_SERVERS", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")
TURN_SERVER = {"urls": ["turn:turn.example.org:3478"], "username": "user", "credential": "secret"}


class MissingSecretsFile(Mapping):
    """Behaves like st.secrets when there is no secrets.toml: every read raises."""

    def __getitem__(self, key):
        raise FileNotFoundError("No secrets found")

    def __iter__(self) -> Iterator:
        raise FileNotFoundError("No secrets found")

    def __len__(self) -> int:
        raise FileNotFoundError("No secrets found")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in (*ICE_SETTINGS, "SOME_SETTING"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def twilio_calls(monkeypatch) -> list[tuple[str, str]]:
    """Replace the Twilio request with a recorder that returns one TURN server."""
    import streamlit_webrtc.credentials

    calls = []

    def fake_get_twilio_ice_servers(account_sid, auth_token):
        calls.append((account_sid, auth_token))
        return [TURN_SERVER]

    monkeypatch.setattr(streamlit_webrtc.credentials, "get_twilio_ice_servers", fake_get_twilio_ice_servers)
    return calls


def test_secrets_take_precedence_over_the_environment(monkeypatch):
    monkeypatch.setenv("SOME_SETTING", "from-env")
    assert get_setting("SOME_SETTING", {"SOME_SETTING": "from-secrets"}) == "from-secrets"


def test_environment_is_used_when_secrets_lack_the_setting(monkeypatch):
    monkeypatch.setenv("SOME_SETTING", "from-env")
    assert get_setting("SOME_SETTING", {"OTHER": "x"}) == "from-env"
    assert get_setting("SOME_SETTING") == "from-env"


def test_unreadable_secrets_count_as_unset(monkeypatch):
    assert get_setting("SOME_SETTING", MissingSecretsFile(), "fallback") == "fallback"
    monkeypatch.setenv("SOME_SETTING", "from-env")
    assert get_setting("SOME_SETTING", MissingSecretsFile()) == "from-env"


def test_empty_values_count_as_unset(monkeypatch):
    monkeypatch.setenv("SOME_SETTING", "  ")
    assert get_setting("SOME_SETTING", {"SOME_SETTING": ""}, "fallback") == "fallback"


def test_explicit_ice_servers_from_json(monkeypatch, twilio_calls):
    monkeypatch.setenv("ICE_SERVERS", json.dumps([TURN_SERVER, {"urls": "stun:stun.example.org"}]))
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "sid")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "token")
    assert ice_servers() == [TURN_SERVER, {"urls": ["stun:stun.example.org"]}]
    assert twilio_calls == []


def test_explicit_ice_servers_from_a_secrets_toml_list(twilio_calls):
    assert ice_servers({"ICE_SERVERS": [TURN_SERVER]}) == [TURN_SERVER]


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
    with caplog.at_level(logging.WARNING, logger="emotion.settings"):
        servers = ice_servers()
    assert servers == settings.PUBLIC_STUN_SERVERS
    assert "Ignoring ICE_SERVERS: not valid JSON" in caplog.text


def test_twilio_credentials_fetch_turn_servers(twilio_calls):
    servers = ice_servers({"TWILIO_ACCOUNT_SID": "sid", "TWILIO_AUTH_TOKEN": "token"})
    assert servers == [TURN_SERVER]
    assert twilio_calls == [("sid", "token")]


def test_failed_twilio_request_falls_back_to_stun(monkeypatch, caplog):
    import streamlit_webrtc.credentials

    def failing(account_sid, auth_token):
        raise ImportError("Twilio library is not installed")

    monkeypatch.setattr(streamlit_webrtc.credentials, "get_twilio_ice_servers", failing)
    with caplog.at_level(logging.WARNING, logger="emotion.settings"):
        servers = ice_servers({"TWILIO_ACCOUNT_SID": "sid", "TWILIO_AUTH_TOKEN": "token"})
    assert servers == settings.PUBLIC_STUN_SERVERS
    assert "Could not get TURN credentials from Twilio: Twilio library is not installed" in caplog.text


def test_half_configured_twilio_is_reported(monkeypatch, caplog, twilio_calls):
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "sid")
    with caplog.at_level(logging.WARNING, logger="emotion.settings"):
        assert ice_servers() == settings.PUBLIC_STUN_SERVERS
    assert "Only one of TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN" in caplog.text
    assert twilio_calls == []


def test_nothing_configured_gives_public_stun_and_a_turn_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="emotion.settings"):
        servers = ice_servers(MissingSecretsFile())
    assert servers == [{"urls": ["stun:stun.l.google.com:19302"]}]
    assert "need a TURN server" in caplog.text
    servers[0]["urls"].append("stun:changed")  # callers get a copy, not the module constant
    assert settings.PUBLIC_STUN_SERVERS == [{"urls": ["stun:stun.l.google.com:19302"]}]
