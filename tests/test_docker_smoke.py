"""scripts/docker_smoke.sh's own checks, run before it installs or builds anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_a_python_without_the_dev_requirements_is_named_before_anything_is_installed(tmp_path: Path):
    # On PATH: a `python` that sees only the standard library, and an apt-get that records a call.
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    base_python = getattr(sys, "_base_executable", sys.executable)
    (bin_folder / "python").write_text(f'#!/bin/sh\nexec "{base_python}" -S "$@"\n')
    (bin_folder / "apt-get").write_text(f'#!/bin/sh\ntouch "{tmp_path / "apt-get called"}"\nexit 1\n')
    for shim in bin_folder.iterdir():
        shim.chmod(0o755)
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "docker_smoke.sh")],
        env={**os.environ, "PATH": f"{bin_folder}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "lacks PIL skimage" in result.stderr
    assert "python -m pip install -r requirements-dev.txt" in result.stderr
    assert not (tmp_path / "apt-get called").exists()
