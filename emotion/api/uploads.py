"""Reading a request's multipart files into memory, within the limits, before any is analysed."""

from __future__ import annotations

from typing import Literal, NamedTuple

from fastapi import HTTPException, Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import File, FormParser, parse_options_header

MULTIPART_OVERHEAD_BYTES = 16 * 1024  # per file: boundary and part headers
MB = 1024 * 1024  # as Streamlit counts its upload limits


class Upload(NamedTuple):
    name: str  # the file name the client sent
    media_type: str | None  # the part's Content-Type, if it had one
    data: bytes


async def read_uploads(
    request: Request, kind: Literal["image", "video"], max_files: int, max_mb: int
) -> list[Upload]:
    """The files of a multipart/form-data body, read into memory within the limits.

    Raises HTTPException: 415 for a body that is not multipart or a file that is not of `kind`
    (image/*, video/*; untyped and application/octet-stream files are tried), 413 for a file
    over `max_mb` or a body over the room `max_files` such files need, 422 for no files or too
    many, 400 for a malformed body.
    """
    what = "photo" if kind == "image" else "video"
    media_type, options = parse_options_header(request.headers.get("content-type"))
    if media_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise HTTPException(415, f"Send the {what}s as multipart/form-data files (curl -F).")
    max_file_bytes = max_mb * MB
    max_body_bytes = max_files * (max_file_bytes + MULTIPART_OVERHEAD_BYTES)
    too_large = HTTPException(
        413, f"The request is too large: at most {max_files} {what}(s) of {max_mb} MB each."
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body_bytes:
        raise too_large
    files: list[File] = []
    parser = FormParser(
        "multipart/form-data",
        on_field=None,
        on_file=files.append,
        boundary=options[b"boundary"],
        config={"MAX_MEMORY_FILE_SIZE": float("inf")},  # kept in memory, never spooled to disk
    )
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_body_bytes:
                raise too_large
            parser.write(chunk)
            if len(files) > max_files:
                raise HTTPException(422, f"Send at most {max_files} {what}(s) per request.")
        parser.finalize()
    except FormParserError as error:
        raise HTTPException(400, f"The multipart body is malformed: {error}") from None
    if not files:
        raise HTTPException(422, f"No {what} in the request: send it as a multipart file (curl -F).")
    uploads = []
    for file in files:
        upload = Upload(
            name=(file.file_name or b"").decode("utf-8", "replace"),
            media_type=file.content_type,
            data=file.file_object.getvalue(),
        )
        if len(upload.data) > max_file_bytes:
            raise HTTPException(413, f"{upload.name} is larger than {max_mb} MB, the limit per {what}.")
        declared_type = (upload.media_type or "").partition(";")[0].strip().lower()
        if declared_type not in ("", "application/octet-stream") and not declared_type.startswith(f"{kind}/"):
            raise HTTPException(415, f"{upload.name} is {declared_type}, not a {what}.")
        uploads.append(upload)
    return uploads


def header_safe(text: str) -> str:
    """A file name for a quoted header parameter: printable ASCII without quotes or backslashes."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in text)
