"""Which files are photos and videos, by their names, and finding them in folders: one list for
the page's uploaders, the command line and the batch command.

A file named explicitly is tried whatever its name; a folder is searched recursively for files
with these extensions, in a stable (sorted) order. What is not a regular file (a pipe, a device, a
link to nothing) is reported with its problem, never opened: reading a pipe would wait forever.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

# What emotion.image decodes (its FORMATS), as files end.
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
# The containers phones, cameras and browsers record to.
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v")
MEDIA_EXTENSIONS = PHOTO_EXTENSIONS + VIDEO_EXTENSIONS
MISSING = "no such file or folder"
BROKEN_LINK = "a link to a file that does not exist"
NOT_A_FILE = "not a regular file (a pipe, a socket or a device)"

MediaKind = Literal["photo", "video"]


def media_kind(name: str) -> MediaKind:
    """'photo' for a photo's extension, else 'video' (which says so if the file is none)."""
    return "photo" if name.lower().endswith(PHOTO_EXTENSIONS) else "video"


def find_media(
    paths: Sequence[str | Path], extensions: Sequence[str] = MEDIA_EXTENSIONS
) -> Iterator[tuple[Path, str | None]]:
    """(file, None) for each file to analyse, (path, problem) for one that cannot be read.

    A folder gives the entries under it whose name ends with one of `extensions` (any case); a
    path given by name is yielded as it is. The problem is MISSING, BROKEN_LINK or NOT_A_FILE.
    """
    suffixes = tuple(extension.lower() for extension in extensions)
    for path in map(Path, paths):
        if path.is_dir():
            for entry in sorted(path.rglob("*")):
                if entry.name.lower().endswith(suffixes) and not entry.is_dir():
                    yield entry, file_problem(entry)
        else:
            yield path, file_problem(path)


def file_problem(path: Path) -> str | None:
    """Why the path cannot be read as a file (MISSING, BROKEN_LINK, NOT_A_FILE), or None."""
    if path.is_file():
        return None
    if path.exists():
        return NOT_A_FILE
    return BROKEN_LINK if path.is_symlink() else MISSING
