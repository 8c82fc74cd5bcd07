"""The container image's health check (the Dockerfile's HEALTHCHECK): exit 0 when the server answers.

    python scripts/healthcheck.py

A container runs the page (Streamlit: /_stcore/health) or the HTTP API (`python -m emotion serve`:
/healthz). Which one, and on which port, is read from the command lines of the container's
processes: `--port` for the API; `--server.port`, else STREAMLIT_SERVER_PORT, for the page.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

from emotion.cli import API_PORT

PAGE_PORT = 8501  # Streamlit's default server.port
TIMEOUT_S = 4  # under the HEALTHCHECK's --timeout


def command_lines() -> list[list[str]]:
    """The arguments of every process this one can see (in a container: the container's)."""
    lines = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(path.read_bytes().decode(errors="replace").split("\0"))
        except OSError:  # the process ended meanwhile
            continue
    return lines


def option(args: list[str], name: str) -> str | None:
    """The value of `name` in `args`, given as `name VALUE` or `name=VALUE`; None when absent."""
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def health_url(lines: list[list[str]]) -> str:
    for args in lines:
        if "emotion" in args and "serve" in args:
            return f"http://127.0.0.1:{option(args, '--port') or API_PORT}/healthz"
    ports = (option(args, "--server.port") for args in lines)
    port = next(filter(None, ports), None) or os.environ.get("STREAMLIT_SERVER_PORT") or PAGE_PORT
    return f"http://127.0.0.1:{port}/_stcore/health"


def main() -> int:
    url = health_url(command_lines())
    # Straight to the server: a proxy in HTTP_PROXY (without NO_PROXY) would be asked for 127.0.0.1.
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(url, timeout=TIMEOUT_S) as response:
            return 0 if response.status == 200 else 1
    except OSError as error:
        print(f"{url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
