from __future__ import annotations

from emotion.media import MISSING, PHOTO_EXTENSIONS, VIDEO_EXTENSIONS, find_media, media_kind


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
