"""The installable engine: pyproject.toml's dependencies against the requirements files that
Community Cloud, the container image and the dev install read, its packages and package data,
and the `emotion-lens` command, run from an empty folder as an installed command is."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from PIL import Image

from emotion.model_file import shipped_file
from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def requirement_lines(name: str) -> tuple[set[str], set[str]]:
    """(requirements, options such as `-r requirements.txt` and `-e .`) of a requirements file,
    each requirement written as `packaging` normalises it."""
    requirements, options = set(), set()
    for line in (REPO / name).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-"):
            options.add(line)
        elif line:
            requirements.add(str(Requirement(line)))
    return requirements, options


def normalised(requirements: list[str]) -> set[str]:
    return {str(Requirement(requirement)) for requirement in requirements}


def test_the_dependencies_are_requirements_serves_ranges_and_the_extras_their_files():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert normalised(PYPROJECT["project"]["dependencies"]) == requirement_lines("requirements-serve.txt")[0]
    assert normalised(extras["spark"]) == requirement_lines("requirements-spark.txt")[0]
    dev_requirements, dev_options = requirement_lines("requirements-dev.txt")
    assert normalised(extras["dev"]) == {"emotion-lens[spark,train]", *dev_requirements}
    assert dev_options == {"-r requirements.txt", "-r requirements-spark.txt", "-e ."}


def test_requirements_txt_is_the_serving_set_and_tensorflow_as_the_train_extra():
    """Community Cloud installs requirements.txt, not the package: it must not drift from it."""
    requirements, options = requirement_lines("requirements.txt")
    assert options == {"-r requirements-serve.txt"}
    assert requirements == normalised(PYPROJECT["project"]["optional-dependencies"]["train"])


def test_every_package_of_the_engine_is_installed_and_model_as_emotion_model():
    setuptools = PYPROJECT["tool"]["setuptools"]
    found = {"emotion.model"}  # in the checkout, model/
    for package in ("emotion", "recommendations"):
        folder = Path(str(importlib.resources.files(package)))  # the checkout's, or the installed one
        for init in folder.rglob("__init__.py"):
            found.add(".".join((package, *init.parent.relative_to(folder).parts)))
    assert set(setuptools["packages"]) == found
    assert setuptools["package-dir"] == {"emotion.model": "model"}
    for package, names in setuptools["package-data"].items():
        folder = importlib.resources.files(package)
        assert [name for name in names if not (folder / name).is_file()] == [], package


def test_the_shipped_files_are_read_from_the_installed_package():
    names = PYPROJECT["tool"]["setuptools"]["package-data"]["emotion.model"]
    for name in names:
        assert shipped_file(name).is_file(), name
    bundled = shipped_file("emotion_cnn.keras")
    assert bundled.read_bytes() == (REPO / "model" / "emotion_cnn.keras").read_bytes()


def test_emotion_lens_answers_as_python_m_emotion_from_an_empty_folder(tmp_path: Path, astronaut_rgb):
    (command,) = importlib.metadata.entry_points(group="console_scripts", name="emotion-lens")
    assert command.value == "emotion.cli:main"
    Image.fromarray(astronaut_rgb).save(tmp_path / "photo.jpg")
    # As cron runs it: the environment's programs by path, nothing of the checkout on the path.
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    bin_folder = Path(sys.executable).parent
    answers = [
        subprocess.run(
            [*program, "predict", "photo.jpg", "--json"],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
        for program in ([str(bin_folder / "emotion-lens")], [sys.executable, "-m", "emotion"])
    ]
    for answer in answers:
        assert answer.returncode == 0, answer.stderr[-3000:]
    assert answers[0].stdout == answers[1].stdout
    assert '"emotion": "happy"' in answers[0].stdout


def test_the_command_names_itself_in_its_usage():
    bin_folder = Path(sys.executable).parent
    for program, name in (
        ([str(bin_folder / "emotion-lens")], "emotion-lens"),
        ([sys.executable, "-m", "emotion"], "python -m emotion"),
    ):
        result = subprocess.run([*program, "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.startswith(f"usage: {name} "), result.stdout[:200]
