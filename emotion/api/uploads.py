"""Reading a request's multipart files, within the limits, before any is analysed.

Each file is kept in memory up to SPOOL_BYTES and on disk (the temporary folder) beyond, so a
request holds a few megabytes of memory whatever its size. The limits hold while the body
streams in, not once it has arrived:
- a file over the per-file limit is refused (413) as soon as its bytes pass it; a part that is
  no file (no filename) may carry FIELD_BYTES, which are dropped, and a file of the wrong type is
  refused (415) as its headers end;
- the bytes received by the requests in flight are bounded by an UploadBudget, all together and
  per client (its address): a request that would go over the whole is answered 503, over its
  client's share 429, both with Retry-After, at once;
- a body must keep arriving: IDLE_TIMEOUT_S without a byte, or a mean rate under
  MIN_BYTES_PER_S once GRACE_S have passed, is answered 408.
The files (the one still arriving too) and their share of the budget are let go when the request
has been answered, however it ended.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import BinaryIO, Literal, NamedTuple

import anyio
from fastapi import HTTPException, Request
from python_multipart.decoders import Base64Decoder, QuotedPrintableDecoder
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import File, MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

logger = logging.getLogger(__name__)

MULTIPART_OVERHEAD_BYTES = 16 * 1024  # per file: boundary and part headers
MB = 1024 * 1024  # as Streamlit counts its upload limits
SPOOL_BYTES = 1 * MB  # of each file kept in memory; the rest goes to a temporary file
UPLOAD_BYTES_IN_FLIGHT = 2048 * MB  # received by all requests at once, in memory and on disk
CLIENT_BYTES_IN_FLIGHT = UPLOAD_BYTES_IN_FLIGHT // 4  # of that, by one client's requests together
RETRY_AFTER_S = 30  # suggested to a client refused because too much is being uploaded
FIELD_BYTES = 4 * 1024  # a part without a filename (a form field): read and dropped up to this
IDLE_TIMEOUT_S = 30.0  # a body that sends nothing for this long is answered 408
GRACE_S = 30.0  # then a body must have arrived at MIN_BYTES_PER_S on average:
MIN_BYTES_PER_S = 64 * 1024  # 200 MB take at most about 53 minutes


class UploadBudget:
    """The bytes the requests in flight may hold, all together and per client. Used from the event
    loop only."""

    def __init__(
        self, max_bytes: int = UPLOAD_BYTES_IN_FLIGHT, max_client_bytes: int = CLIENT_BYTES_IN_FLIGHT
    ):
        self.max_bytes = max_bytes
        self.max_client_bytes = max_client_bytes
        self.held = 0
        self.held_by: dict[str, int] = {}  # per client; a client holding nothing is not kept

    def take(self, size: int, client: str = "") -> None:
        """Take `size` more bytes for `client`; raises a 503 HTTPException when that would go over
        the budget, a 429 when over the client's share of it."""
        if self.held + size > self.max_bytes:
            raise HTTPException(
                503,
                "The service is receiving too many uploads at the moment; try again shortly.",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        mine = self.held_by.get(client, 0)
        if mine + size > self.max_client_bytes:
            raise HTTPException(
                429,
                f"Your uploads in progress hold {self.max_client_bytes // MB} MB, the most one client may "
                "send at once; wait for them to finish.",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.held += size
        self.held_by[client] = mine + size

    def give_back(self, size: int, client: str = "") -> None:
        self.held -= size
        left = self.held_by.get(client, 0) - size
        if left > 0:
            self.held_by[client] = left
        else:
            self.held_by.pop(client, None)


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
    over `max_mb`, a body over the room `max_files` such files need or a form field over
    FIELD_BYTES, 422 for no files or too many, 400 for a malformed or interrupted body, 408 for
    one that stalls or trickles, 503 when `budget` is spent, 429 when the client's share of it is.
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
    parts = _Parts(kind, max_files, max_file_bytes)
    parser = MultipartParser(options[b"boundary"], callbacks=parts.callbacks())
    client = request.client.host if request.client is not None else ""
    received = 0
    try:
        async for chunk in _body(request):
            budget.take(len(chunk), client)
            received += len(chunk)
            if received > max_body_bytes:
                raise too_large
            parser.write(chunk)
        parser.finalize()
        if not parts.ended or parts.arriving is not None:
            raise HTTPException(400, "The multipart body ends before its last boundary.")
        if not parts.files:
            raise HTTPException(422, f"No {what} in the request: send it as a multipart file (curl -F).")
        yield [_upload(file) for file in parts.files]
    except FormParserError as error:
        raise HTTPException(400, f"The multipart body is malformed: {error}") from None
    except ClientDisconnect:  # nobody is left to answer; not a fault of the service
        logger.info("%s %s: the client left during the upload", request.method, request.url.path)
        raise HTTPException(400, "The upload was interrupted.") from None
    finally:
        budget.give_back(received, client)
        for file in parts.files:
            file.close()  # a temporary file is removed
        if parts.arriving is not None:
            parts.arriving.close()  # cut off half-way: by the client, a limit or the server's end


async def _body(request: Request) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; HTTPException 408 for a body that stops arriving for
    IDLE_TIMEOUT_S or arrives under MIN_BYTES_PER_S (on average, after GRACE_S)."""
    started = time.monotonic()
    received = 0
    chunks = request.stream().__aiter__()
    while True:
        with anyio.move_on_after(IDLE_TIMEOUT_S) as waiting:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
        if waiting.cancelled_caught:
            raise HTTPException(408, f"The upload stalled: nothing arrived for {IDLE_TIMEOUT_S:.0f} s.")
        received += len(chunk)
        elapsed_s = time.monotonic() - started
        if elapsed_s > GRACE_S and received < MIN_BYTES_PER_S * elapsed_s:
            raise HTTPException(
                408, f"The upload is too slow: under {MIN_BYTES_PER_S // 1024} KB/s after {GRACE_S:.0f} s."
            )
        yield chunk


class _SizedWriter:
    """Writes a part's bytes to its File, refusing them (413) once they pass the limit."""

    def __init__(self, file: File, max_bytes: int, what: str):
        self.file, self.max_bytes, self.what = file, max_bytes, what
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.max_bytes:
            name = (self.file.file_name or b"").decode("utf-8", "replace")
            raise HTTPException(
                413, f"{name} is larger than {self.max_bytes // MB} MB, the limit per {self.what}."
            )
        return self.file.write(data)

    def finalize(self) -> None:
        self.file.finalize()


class _FieldSink:
    """A part without a filename: its bytes are counted up to FIELD_BYTES and dropped."""

    def __init__(self):
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > FIELD_BYTES:
            raise HTTPException(
                413,
                f"A form field (a part without a filename) may hold {FIELD_BYTES // 1024} KB; send files.",
            )
        return len(data)

    def finalize(self) -> None:
        pass


class _Parts:
    """The multipart parser's callbacks: each file part to a File, checked as its headers end and
    while its bytes arrive; the file still arriving is kept apart, so that it is closed (and its
    temporary file removed) however the request ends."""

    def __init__(self, kind: Literal["image", "video"], max_files: int, max_file_bytes: int):
        self.kind, self.max_files, self.max_file_bytes = kind, max_files, max_file_bytes
        self.what = "photo" if kind == "image" else "video"
        self.files: list[File] = []  # arrived whole
        self.arriving: File | None = None
        self.ended = False  # the last boundary was read
        self._writer: _SizedWriter | _FieldSink | Base64Decoder | QuotedPrintableDecoder | None = None
        self._headers: dict[bytes, bytes] = {}
        self._header_name: list[bytes] = []
        self._header_value: list[bytes] = []

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._headers.clear,
            "on_header_field": lambda data, start, end: self._header_name.append(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.append(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": lambda data, start, end: self._writer.write(data[start:end]),
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _header_end(self) -> None:
        self._headers[b"".join(self._header_name).lower()] = b"".join(self._header_value).strip(b" \t")
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, disposition = parse_options_header(self._headers.get(b"content-disposition"))
        field_name, file_name = disposition.get(b"name"), disposition.get(b"filename")
        if field_name is None:
            raise FormParserError("a part has no name in its Content-Disposition")
        if file_name is None:
            self._writer = _FieldSink()
            return
        if len(self.files) + 1 > self.max_files:
            raise HTTPException(422, f"Send at most {self.max_files} {self.what}(s) per request.")
        content_type = self._headers.get(b"content-type")
        media_type = content_type.decode("latin-1") if content_type is not None else None
        declared_type = (media_type or "").partition(";")[0].strip().lower()
        if declared_type not in ("", "application/octet-stream") and not declared_type.startswith(
            f"{self.kind}/"
        ):
            name = file_name.decode("utf-8", "replace")
            raise HTTPException(415, f"{name} is {declared_type}, not a {self.what}.")
        self.arriving = File(
            file_name, field_name, {"MAX_MEMORY_FILE_SIZE": SPOOL_BYTES}, content_type=media_type
        )
        writer = _SizedWriter(self.arriving, self.max_file_bytes, self.what)
        encoding = self._headers.get(b"content-transfer-encoding", b"binary").lower()
        self._writer = {b"base64": Base64Decoder, b"quoted-printable": QuotedPrintableDecoder}.get(
            encoding, lambda writer: writer
        )(writer)

    def _part_end(self) -> None:
        self._writer.finalize()
        self._writer = None
        if self.arriving is not None:
            self.files.append(self.arriving)
            self.arriving = None

    def _end(self) -> None:
        self.ended = True


def _upload(file: File) -> Upload:
    return Upload((file.file_name or b"").decode("utf-8", "replace"), file.content_type, file.file_object)


def header_safe(text: str) -> str:
    """A file name for a quoted header parameter: printable ASCII without quotes or backslashes."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in text)
