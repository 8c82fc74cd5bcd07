from __future__ import annotations

import os

from emotion.media import (
    BROKEN_LINK,
    MISSING,
    NOT_A_FILE,
    PHOTO_EXTENSIONS,
    VIDEO_EXTENSIONS,
    find_media,
    media_kind,
)


def test_folders_give_their_media_sorted_and_named_files_are_kept(tmp_path):
    folder = tmp_path / "archive"
    (folder / "b").mkdir(parents=True)
    for name in ("b/two.JPG", "a.mp4", "b/notes.txt", "c.webm", "d.png"):
        (folder / name).write_bytes(b"x")
    (folder / "e.mov").mkdir()  # a folder named like a video is no video
    named = tmp_path / "notes.txt"
    named.write_bytes(b"x")
    found = list(find_media([folder, named, tmp_path / "gone.jpg"]))
    assert found == [
        (folder / "a.mp4", None),
        (folder / "b" / "two.JPG", None),
        (folder / "c.webm", None),
        (folder / "d.png", None),
        (named, None),
        (tmp_path / "gone.jpg", MISSING),
    ]
    photos = [path.name for path, _ in find_media([folder], PHOTO_EXTENSIONS)]
    assert photos == ["two.JPG", "d.png"]


def test_kinds_follow_the_extensions():
    assert {media_kind(f"x{extension.upper()}") for extension in PHOTO_EXTENSIONS} == {"photo"}
    assert {media_kind(f"x{extension}") for extension in VIDEO_EXTENSIONS} == {"video"}


def test_what_is_not_a_regular_file_is_reported_not_opened(tmp_path):
    (tmp_path / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    os.mkfifo(tmp_path / "pipe.avi")  # opening it to read would wait for a writer forever
    (tmp_path / "photo.png").symlink_to(tmp_path / "pipe.avi")
    assert list(find_media([tmp_path])) == [
        (tmp_path / "gone.mp4", BROKEN_LINK),
        (tmp_path / "photo.png", NOT_A_FILE),
        (tmp_path / "pipe.avi", NOT_A_FILE),
    ]
    assert list(find_media([tmp_path / "pipe.avi"])) == [(tmp_path / "pipe.avi", NOT_A_FILE)]
