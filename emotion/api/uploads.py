"""Reading a request's multipart files, within the limits, before any is analysed.

Each file is kept in memory up to SPOOL_BYTES and on disk (the temporary folder) beyond, so a
request holds a few megabytes of memory whatever its size. The bytes received by the requests
in flight, all together, are bounded by an UploadBudget: one that would go over it is answered
503 (with Retry-After) at once. The files and their share of the budget are let go when the
request has been answered.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import BinaryIO, Literal, NamedTuple

from fastapi import HTTPException, Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import File, FormParser, parse_options_header
from starlette.requests import ClientDisconnect

logger = logging.getLogger(__name__)

MULTIPART_OVERHEAD_BYTES = 16 * 1024  # per file: boundary and part headers
MB = 1024 * 1024  # as Streamlit counts its upload limits
SPOOL_BYTES = 1 * MB  # of each file kept in memory; the rest goes to a temporary file
UPLOAD_BYTES_IN_FLIGHT = 2048 * MB  # received by all requests at once, in memory and on disk
RETRY_AFTER_S = 30  # suggested to a client refused because too much is being uploaded


class UploadBudget:
    """The bytes the requests in flight may hold, all together. Used from the event loop only."""

    def __init__(self, max_bytes: int = UPLOAD_BYTES_IN_FLIGHT):
        self.max_bytes = max_bytes
        self.held = 0

    def take(self, size: int) -> None:
        """Take `size` more bytes; raises a 503 HTTPException when that would go over the budget."""
        if self.held + size > self.max_bytes:
            raise HTTPException(
                503,
                "The service is receiving too many uploads at the moment; try again shortly.",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.held += size


class Upload(NamedTuple):
    name: str  # the file name the client sent
    media_type: str | None  # the part's Content-Type, if it had one
    file: BinaryIO  # in memory or a temporary file; closed (and removed) once the request is answered

    def read(self) -> bytes:
        """All of the file's bytes."""
        self.file.seek(0)
        return self.file.read()


@contextlib.asynccontextmanager
async def receive_uploads(
    request: Request, kind: Literal["image", "video"], max_files: int, max_mb: int, budget: UploadBudget
) -> AsyncIterator[list[Upload]]:
    """The files of a multipart/form-data body, received within the limits and `budget`, until
    the block ends.

    Raises HTTPException: 415 for a body that is not multipart or a file that is not of `kind`
    (image/*, video/*; untyped and application/octet-stream files are tried), 413 for a file
    over `max_mb` or a body over the room `max_files` such files need, 422 for no files or too
    many, 400 for a malformed or interrupted body, 503 when `budget` is spent.
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
        config={"MAX_MEMORY_FILE_SIZE": SPOOL_BYTES},
    )
    received = 0
    try:
        async for chunk in request.stream():
            budget.take(len(chunk))
            received += len(chunk)
            if received > max_body_bytes:
                raise too_large
            parser.write(chunk)
            if len(files) > max_files:
                raise HTTPException(422, f"Send at most {max_files} {what}(s) per request.")
        parser.finalize()
        if not files:
            raise HTTPException(422, f"No {what} in the request: send it as a multipart file (curl -F).")
        yield [_upload(file, kind, max_file_bytes) for file in files]
    except FormParserError as error:
        raise HTTPException(400, f"The multipart body is malformed: {error}") from None
    except ClientDisconnect:  # nobody is left to answer; not a fault of the service
        logger.info("%s %s: the client left during the upload", request.method, request.url.path)
        raise HTTPException(400, "The upload was interrupted.") from None
    finally:
        budget.held -= received
        for file in files:
            file.close()  # a temporary file is removed


def _upload(file: File, kind: Literal["image", "video"], max_file_bytes: int) -> Upload:
    what = "photo" if kind == "image" else "video"
    upload = Upload((file.file_name or b"").decode("utf-8", "replace"), file.content_type, file.file_object)
    if file.size > max_file_bytes:
        raise HTTPException(
            413, f"{upload.name} is larger than {max_file_bytes // MB} MB, the limit per {what}."
        )
    declared_type = (upload.media_type or "").partition(";")[0].strip().lower()
    if declared_type not in ("", "application/octet-stream") and not declared_type.startswith(f"{kind}/"):
        raise HTTPException(415, f"{upload.name} is {declared_type}, not a {what}.")
    return upload


def header_safe(text: str) -> str:
    """A file name for a quoted header parameter: printable ASCII without quotes or backslashes."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in text)
