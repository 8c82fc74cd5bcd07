"""Settings from secrets or the environment, the page's upload limit outside Streamlit, and what
of a URL may be shown."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping

import pytest

from emotion import settings
from emotion.settings import (
    FREE_PASSWORD_ATTEMPTS,
    SERVER_PASSWORD_ATTEMPTS,
    SERVER_WINDOW_S,
    PasswordAttempts,
    client_address,
    get_setting,
    history_settings,
    password_matches,
    read_secrets_file,
    redact_url,
    trusted_proxies,
    upload_limit_mb,
)


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
    monkeypatch.delenv("SOME_SETTING", raising=False)


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


def test_a_secrets_file_is_read_outside_streamlit_and_a_broken_one_counts_as_empty(tmp_path, caplog):
    secrets_file = tmp_path / "secrets.toml"
    assert read_secrets_file(secrets_file) == {}
    secrets_file.write_text('MODEL_URL = "https://example.org/model.keras"\nAPI_KEYS = ["a", "b"]\n')
    assert read_secrets_file(secrets_file) == {
        "MODEL_URL": "https://example.org/model.keras",
        "API_KEYS": ["a", "b"],
    }
    secrets_file.write_text('API_KEYS = "never-shown\n')
    assert read_secrets_file(secrets_file) == {}
    assert "Ignoring " in caplog.text and "never-shown" not in caplog.text


def test_the_pages_upload_limit_is_read_from_its_config_file(tmp_path, caplog):
    import tomllib

    with open(settings.STREAMLIT_CONFIG, "rb") as file:
        assert upload_limit_mb() == tomllib.load(file)["server"]["maxUploadSize"]
    config = tmp_path / "config.toml"
    config.write_text("[server]\nmaxUploadSize = 25\n")
    assert upload_limit_mb(config) == 25
    assert upload_limit_mb(tmp_path / "missing.toml") == settings.STREAMLIT_UPLOAD_LIMIT_MB
    assert "No server.maxUploadSize in " in caplog.text


def test_empty_values_count_as_unset(monkeypatch):
    monkeypatch.setenv("SOME_SETTING", "  ")
    assert get_setting("SOME_SETTING", {"SOME_SETTING": ""}, "fallback") == "fallback"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://user:t0ken@models.example.org/m.keras?X-Amz-Signature=s1g",
            "https://models.example.org/...",
        ),
        ("https://drive.google.com/file/d/1AbCdEf/view?usp=sharing", "https://drive.google.com/..."),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("drive.google.com/file/d/1AbCdEf", "***"),
        ("https://host:notaport/x", "***"),
    ],
)
def test_urls_are_shown_without_credentials(url, shown):
    assert redact_url(url) == shown


def test_password_comparison():
    assert password_matches("correct horse", "correct horse")
    assert not password_matches("correct hors", "correct horse")
    assert not password_matches("", "correct horse")
    assert password_matches("gr\u00fcn", "gr\u00fcn")


def test_history_settings_come_from_secrets_or_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("HISTORY_PATH", raising=False)
    monkeypatch.delenv("HISTORY_TABLE", raising=False)
    monkeypatch.setenv("HISTORY_PASSWORD", "from the environment")
    settings = history_settings({"HISTORY_PATH": str(tmp_path / "h.duckdb")})
    assert settings.path == tmp_path / "h.duckdb"
    assert settings.table is None
    assert settings.password == "from the environment"
    assert history_settings({}).path.name == "detections.duckdb"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_visitor_waits_longer_after_each_wrong_password_past_the_free_ones():
    clock = Clock()
    attempts = PasswordAttempts(now=clock)
    waits = []
    for _ in range(FREE_PASSWORD_ATTEMPTS + 3):
        assert attempts.wait_s("a") == 0  # each try waited for
        attempts.failed("a")
        waits.append(attempts.wait_s("a"))
        clock.now += waits[-1]
    assert waits == [0] * (FREE_PASSWORD_ATTEMPTS - 1) + [1, 2, 4, 8]
    assert attempts.wait_s("b") == 0  # another visitor is not held up by one
    attempts.succeeded("a")
    assert attempts.wait_s("a") == 0


def test_past_the_servers_limit_an_address_that_guessed_wrong_waits_and_a_fresh_one_gets_a_try():
    clock = Clock()
    attempts = PasswordAttempts(now=clock)
    for visitor in range(SERVER_PASSWORD_ATTEMPTS):  # strangers, one wrong guess each
        assert attempts.wait_s(f"10.0.0.{visitor}") == 0
        attempts.failed(f"10.0.0.{visitor}")
        clock.now += 0.5
    assert attempts.wait_s("10.0.0.0") == pytest.approx(SERVER_WINDOW_S - 10.0)  # its last wrong one
    assert attempts.wait_s("192.0.2.1") == 0  # the owner, with the right password, is let through
    attempts.failed("192.0.2.1")  # a fresh address's one try, wrong
    assert attempts.wait_s("192.0.2.1") == pytest.approx(SERVER_WINDOW_S)
    clock.now += SERVER_WINDOW_S
    assert attempts.wait_s("10.0.0.0") == 0


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "trusted", "address"),
    [
        ("203.0.113.7", None, (), "203.0.113.7"),
        ("203.0.113.7", "198.51.100.1", (), "203.0.113.7"),  # an untrusted peer's header is ignored
        (None, "198.51.100.1", ("127.0.0.1",), "198.51.100.1"),  # Streamlit's None: localhost
        ("10.1.2.3", "6.6.6.6, 198.51.100.1", ("10.0.0.0/8",), "198.51.100.1"),  # the proxy's entry
        ("10.1.2.3", "198.51.100.1, 10.9.9.9", ("10.0.0.0/8",), "198.51.100.1"),  # proxies in a row
        ("10.1.2.3", "not an address", ("10.0.0.0/8",), "10.1.2.3"),
        ("10.1.2.3", None, ("10.0.0.0/8",), "10.1.2.3"),
    ],
)
def test_the_client_address_is_read_through_trusted_proxies_only(peer, forwarded_for, trusted, address):
    networks = tuple(ipaddress.ip_network(network) for network in trusted)
    assert client_address(peer, forwarded_for, networks) == address


def test_trusted_proxies_default_to_this_machine_and_a_malformed_one_is_left_out(monkeypatch, caplog):
    assert trusted_proxies({}) == (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"))
    configured = trusted_proxies({"TRUSTED_PROXIES": "10.0.0.0/8, nonsense"})
    assert configured == (ipaddress.ip_network("10.0.0.0/8"),)
    assert "nonsense" in caplog.text
    monkeypatch.setenv("TRUSTED_PROXIES", "none")
    assert trusted_proxies() == ()
