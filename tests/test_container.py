"""The container image's inputs: what .dockerignore leaves out of it, and its health check."""

from __future__ import annotations

import http.server
import re
import threading

import pytest

from scripts import healthcheck
from tests.conftest import REPO


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context: some pattern matches it or a folder
    above it (`**` any folders, `*` and `?` within one name), the last matching one deciding."""

    def regex(pattern: str) -> re.Pattern:
        parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
        wild = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        return re.compile("".join(wild.get(part, re.escape(part)) for part in parts))

    parents = path.split("/")
    candidates = ["/".join(parents[: end + 1]) for end in range(len(parents))]
    left_out = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if any(regex(pattern.lstrip("!")).fullmatch(candidate) for candidate in candidates):
            left_out = not negated
    return left_out


@pytest.fixture(scope="module")
def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [
        "detections.duckdb",
        "logs/detections.duckdb",
        "logs/detections.duckdb.wal",
        "archive-out/events/source_kind=photo/date=2026-01-01/part-0.parquet",
        "archive-out/errors/part-0.parquet",
        ".streamlit/secrets.toml",
    ],
)
def test_detection_logs_batch_tables_and_secrets_stay_out_of_the_image(dockerignore, path):
    assert ignored(path, dockerignore)


@pytest.mark.parametrize("path", ["app.py", "emotion/video.py", "ui/photo.py", ".streamlit/config.toml"])
def test_what_the_page_runs_goes_into_the_image(dockerignore, path):
    assert not ignored(path, dockerignore)


def test_the_health_check_asks_the_server_directly_whatever_proxy_is_set(monkeypatch):
    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/healthz"
        monkeypatch.setattr(healthcheck, "health_url", lambda lines: url)
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert healthcheck.main() == 0
    finally:
        server.shutdown()
        server.server_close()
