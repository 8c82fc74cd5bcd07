"""Which files are photos and videos, by their names, and finding them in folders: one list for
the page's uploaders, the command line and the batch command.

A file named explicitly is tried whatever its name; a folder is searched recursively for files
with these extensions, in a stable (sorted) order.
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

MediaKind = Literal["photo", "video"]


def media_kind(name: str) -> MediaKind:
    """'photo' for a photo's extension, else 'video' (which says so if the file is none)."""
    return "photo" if name.lower().endswith(PHOTO_EXTENSIONS) else "video"


def find_media(
    paths: Sequence[str | Path], extensions: Sequence[str] = MEDIA_EXTENSIONS
) -> Iterator[tuple[Path, str | None]]:
    """(file, None) for each file to analyse, (path, MISSING) for a path that does not exist.

    A folder gives the files under it whose name ends with one of `extensions` (any case); a
    file given by name is yielded as it is.
    """
    suffixes = tuple(extension.lower() for extension in extensions)
    for path in map(Path, paths):
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.name.lower().endswith(suffixes) and file.is_file():
                    yield file, None
        elif path.is_file():
            yield path, None
        else:
            yield path, MISSING
