"""The HTTP API (`python -m emotion serve`): photos and videos in, the same JSON and annotated media out.

An ASGI app (FastAPI under uvicorn) over the engine: the model is loaded once, as the page loads
it; photos are analysed while the request waits, videos as jobs in a bounded queue (see
emotion.jobs). Uploads are read into memory and limited as on the page; a video waits for its
turn in its job's folder. Every error is JSON, `{"detail": "what went wrong"}`. When API_KEYS
is set, the /v1 endpoints need `Authorization: Bearer KEY`, with KEY one of them.

Settings (secrets file or environment, as for the page; see emotion.settings):
  API_KEYS           comma-separated keys; unset: no key needed
  API_RESULT_TTL_S   seconds a video job's results are kept after it finished
  API_VIDEO_QUEUE    video jobs that may wait for a worker; more get 429
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal, NamedTuple

import anyio
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import File, FormParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from emotion.classifier import BUNDLED_MODEL
from emotion.image import SUPPORTED, InvalidImage
from emotion.jobs import WORKERS, Job, JobNotDone, JobNotFound, QueueFull, ResultFile, Status, VideoJobs
from emotion.labels import EMOTIONS
from emotion.live import LiveSettings
from emotion.pipeline import PHOTO_BATCH_MAX, PHOTO_SLOTS, analyze_photo, annotated_png, photo_json
from emotion.remote import LoadedModel, load_configured_classifier
from emotion.settings import get_setting, read_secrets_file, upload_limit_mb
from emotion.video import InvalidVideo, probe_video

logger = logging.getLogger(__name__)

DEFAULT_RESULT_TTL_S = 3600  # one hour to fetch a video's results
DEFAULT_VIDEO_QUEUE = 8  # waiting videos, each at most the upload limit on disk
MULTIPART_OVERHEAD_BYTES = 16 * 1024  # per file: boundary and part headers
RETRY_AFTER_S = 60  # suggested to a client whose video found the queue full
MB = 1024 * 1024  # as Streamlit counts its upload limits
CHUNK_BYTES = 1024 * 1024  # result files are sent in pieces of this size
MEDIA_TYPES = {ResultFile.VIDEO: "video/mp4", ResultFile.CSV: "text/csv"}


@dataclass(frozen=True)
class ApiSettings:
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # never shown, never logged
    result_ttl_s: float = DEFAULT_RESULT_TTL_S
    video_queue: int = DEFAULT_VIDEO_QUEUE
    video_workers: int = WORKERS  # 0: jobs are queued but none runs
    upload_limit_mb: int = field(default_factory=upload_limit_mb)  # per file, photo or video: the page's

    @classmethod
    def from_settings(cls, secrets: Mapping[str, Any] | None = None) -> ApiSettings:
        """API_KEYS, API_RESULT_TTL_S and API_VIDEO_QUEUE; a malformed number is logged, its default used."""
        keys = get_setting("API_KEYS", secrets, "")
        if not isinstance(keys, str):  # a TOML list in the secrets file
            keys = ",".join(str(key) for key in keys)
        return cls(
            api_keys=tuple(key.strip() for key in keys.split(",") if key.strip()),
            result_ttl_s=_number_setting("API_RESULT_TTL_S", secrets, DEFAULT_RESULT_TTL_S, minimum=0),
            video_queue=int(_number_setting("API_VIDEO_QUEUE", secrets, DEFAULT_VIDEO_QUEUE, minimum=1)),
        )


def _number_setting(name: str, secrets: Mapping[str, Any] | None, default: float, minimum: float) -> float:
    value = get_setting(name, secrets, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number) or number < minimum:
        logger.warning("%s must be a number of at least %g, not %r; using %g", name, minimum, value, default)
        return default
    return number


# --- What the service answers (the OpenAPI schema) -------------------------------------------
# Photo results are built by emotion.results; FaceResult documents them, and a test checks that
# it describes them exactly.


class ErrorBody(BaseModel):
    detail: str = Field(description="What went wrong, in words for people.")


class FaceResult(BaseModel):
    face_id: int = Field(description="The face's number in the photo, 1 being the largest")
    box: list[int] = Field(
        description="x, y, width, height in the photo's pixels", min_length=4, max_length=4
    )
    emotion: Literal[EMOTIONS] = Field(description="The likeliest emotion")  # type: ignore[valid-type]
    confidence: float = Field(description="The probability of `emotion`")
    uncertain: bool = Field(
        description="No emotion is clearly ahead: `emotion` is the likeliest of close readings"
    )
    probabilities: dict[str, float] = Field(
        description="The probability of each emotion, in the model's order"
    )


class PhotoResult(BaseModel):
    file: str = Field(description="The file name the photo was uploaded with")
    faces: list[FaceResult] = Field(description="Every face found, largest first; empty when none")


class PhotoResults(BaseModel):
    results: list[PhotoResult] = Field(description="One per uploaded photo, in the upload's order")


class VideoJob(BaseModel):
    id: str
    status: Status
    frames_done: int
    frames_total: int = Field(description="Frames in the video, as its container declares them; 0 if unknown")
    error: str | None = Field(description="Why the job failed")
    expires_in_s: float | None = Field(description="Seconds until the results are removed, once finished")


class ModelInfo(BaseModel):
    file: str = Field(description="The model file's name")
    sha256: str = Field(description="The SHA-256 of the model file")
    source: Literal["bundled", "MODEL_URL"]
    classes: list[str]
    input_shape: list[int] | None
    preprocessing: str | None
    metrics: dict[str, Any] = Field(description="The model's own figures, as stored in its file by training")


class Health(BaseModel):
    status: Literal["ok"]
    video_jobs: dict[str, int] = Field(description="Jobs per state")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "The file cannot be read as an image or a video",
        401: "A valid API key is missing",
        404: "No such job (never created, deleted or expired)",
        409: "The job has no results: it is not done",
        413: "A file or the request is over the size limit",
        415: "The request or a file is not of a type this endpoint takes",
        422: "Bad parameters (the message says which)",
        429: "The video queue is full; retry after Retry-After seconds",
    }
    return {code: {"model": ErrorBody, "description": descriptions[code]} for code in codes}


def _multipart_body(name: str, description: str, max_files: int) -> dict[str, Any]:
    binary: dict[str, Any] = {"type": "string", "format": "binary"}
    schema = (
        {"type": "array", "items": binary, "minItems": 1, "maxItems": max_files} if max_files > 1 else binary
    )
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [name],
                        "properties": {name: {**schema, "description": description}},
                    }
                }
            },
        }
    }


# --- The app --------------------------------------------------------------------------------


class _Service(NamedTuple):
    model: LoadedModel
    key_digests: tuple[bytes, ...]
    upload_limit_mb: int


def create_app(settings: ApiSettings | None = None, model: LoadedModel | None = None) -> FastAPI:
    """The service, with its model loaded (None: as the page loads it). settings: None reads them
    as the page does. While the app runs (its lifespan) video jobs run, in a fresh folder each time,
    and at most PHOTO_SLOTS photos are analysed at once."""
    secrets = read_secrets_file() if settings is None or model is None else None
    settings = settings or ApiSettings.from_settings(secrets)
    model = model or load_configured_classifier(secrets)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        jobs = VideoJobs(
            model.classifier,
            capacity=settings.video_queue,
            result_ttl_s=settings.result_ttl_s,
            workers=settings.video_workers,
        )
        jobs.start()
        app.state.jobs = jobs
        app.state.photo_slots = anyio.CapacityLimiter(PHOTO_SLOTS)
        try:
            yield
        finally:
            await run_in_threadpool(jobs.close)

    app = FastAPI(
        title="Emotion Lens API",
        version="1",
        summary="Faces and their emotions in photos and videos.",
        description='Photos are answered at once; videos become jobs. Errors are JSON: `{"detail": "..."}`.',
        lifespan=lifespan,
    )
    app.state.service = _Service(
        model=model,
        key_digests=tuple(_digest(key) for key in settings.api_keys),
        upload_limit_mb=settings.upload_limit_mb,
    )
    app.add_exception_handler(RequestValidationError, _invalid_parameters)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(_open)
    app.include_router(_v1, dependencies=[Depends(_check_key)] if settings.api_keys else [])
    return app


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


async def _invalid_parameters(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()
    )
    return JSONResponse({"detail": f"Invalid parameters: {problems}"}, status_code=422)


async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
    if error.status_code == 405:  # Starlette's Allow lists the methods of one route of the path only
        allowed = {
            method
            for route in request.app.routes
            if isinstance(route, APIRoute) and route.path_regex.match(request.url.path)
            for method in route.methods
        }
        error.headers = {**(error.headers or {}), "Allow": ", ".join(sorted(allowed))}
    return await http_exception_handler(request, error)


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    logger.error("Error while answering %s %s", request.method, request.url.path, exc_info=error)
    return JSONResponse({"detail": "Internal error; it has been logged."}, status_code=500)


# Dependencies are coroutines: FastAPI would run plain functions in its thread pool, a hop for nothing.
async def _service(request: Request) -> _Service:
    return request.app.state.service


async def _jobs(request: Request) -> VideoJobs:
    return request.app.state.jobs


async def _photo_slots(request: Request) -> anyio.CapacityLimiter:
    return request.app.state.photo_slots


Service = Annotated[_Service, Depends(_service)]
Jobs = Annotated[VideoJobs, Depends(_jobs)]
PhotoSlots = Annotated[anyio.CapacityLimiter, Depends(_photo_slots)]

_bearer = HTTPBearer(auto_error=False, description="One of the keys in the API_KEYS setting")


async def _check_key(
    service: Service,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    given = _digest(credentials.credentials) if credentials is not None else b""
    matched = False
    for digest in service.key_digests:  # all of them, each in constant time: the timing tells nothing
        matched |= hmac.compare_digest(given, digest)
    if not matched:
        raise HTTPException(
            401,
            "A valid API key is required: send it as the header 'Authorization: Bearer KEY'.",
            headers={"WWW-Authenticate": "Bearer"},
        )


_open = APIRouter()
_v1 = APIRouter(prefix="/v1")


@_open.get("/healthz", response_model=Health, summary="Whether the service is up")
def healthz(jobs: Jobs) -> dict:
    return {"status": "ok", "video_jobs": jobs.counts()}


@_v1.get("/model", response_model=ModelInfo, responses=_errors(401), summary="The model in use")
def model_info(service: Service) -> dict:
    metadata = service.model.classifier.metadata
    return {
        "file": service.model.path.name,
        "sha256": service.model.classifier.sha256,
        "source": "bundled" if service.model.path == BUNDLED_MODEL else "MODEL_URL",
        "classes": list(metadata.get("classes", EMOTIONS)),
        "input_shape": metadata.get("input_shape"),
        "preprocessing": metadata.get("preprocessing"),
        "metrics": metadata.get("metrics", {}),
    }


# --- Photos -------------------------------------------------------------------------------


@_v1.post(
    "/photos",
    summary="The faces and emotions in photos",
    description=f"One or more photos ({SUPPORTED}; up to {PHOTO_BATCH_MAX} per request, each within the "
    "page's upload limit) as multipart form files. The answer has one "
    "result per photo, as `python -m emotion predict --json` writes it. With `annotated=true` "
    "and one photo, the answer is the photo as a PNG with each face's box and emotion drawn on it.",
    response_model=PhotoResults,
    responses={
        200: {"content": {"image/png": {}}, "description": "The results, or the annotated PNG"},
        **_errors(400, 401, 413, 415, 422),
    },
    openapi_extra=_multipart_body("files", "The photos", PHOTO_BATCH_MAX),
)
async def post_photos(
    request: Request,
    service: Service,
    slots: PhotoSlots,
    annotated: Annotated[
        bool, Query(description="Answer the annotated photo as a PNG instead of JSON (one photo only)")
    ] = False,
) -> Response:
    uploads = await _read_uploads(request, "image", PHOTO_BATCH_MAX, service.upload_limit_mb)
    if annotated and len(uploads) != 1:
        raise HTTPException(422, f"annotated=true takes exactly one photo, not {len(uploads)}.")
    classifier = service.model.classifier
    if annotated:
        upload = uploads[0]
        try:
            png = await anyio.to_thread.run_sync(
                lambda: annotated_png(upload.data, analyze_photo(upload.data, classifier)), limiter=slots
            )
        except InvalidImage as error:
            raise HTTPException(400, f"{upload.name}: {error}") from None
        disposition = f'inline; filename="{_header_safe(Path(upload.name).stem or "photo")}-emotions.png"'
        return Response(png, media_type="image/png", headers={"Content-Disposition": disposition})
    # Each photo's JSON is what `python -m emotion predict --json` prints for the file.
    results = await anyio.to_thread.run_sync(
        lambda: [photo_json(upload.name, upload.data, classifier) for upload in uploads], limiter=slots
    )
    for upload, result in zip(uploads, results, strict=True):
        if "error" in result:
            raise HTTPException(400, f"{upload.name}: {result['error']}")
    return JSONResponse({"results": results})


# --- Videos -------------------------------------------------------------------------------


@_v1.post(
    "/videos",
    status_code=202,
    response_model=VideoJob,
    summary="Start analysing a video",
    description="One video (MP4, MOV, AVI, WebM, ...; within the page's upload limit) as a multipart "
    "form file. The answer is a job: poll it at its Location until its status is done, then fetch "
    "annotated.mp4 and faces.csv.",
    responses=_errors(400, 401, 413, 415, 422, 429),
    openapi_extra=_multipart_body("file", "The video", 1),
)
async def post_video(
    request: Request,
    service: Service,
    jobs: Jobs,
    detect_every: Annotated[
        int,
        Query(
            ge=1,
            description="Search whole frames for faces on every Nth frame and follow them in between; "
            "1 searches every frame (slower, a little more precise boxes).",
        ),
    ] = LiveSettings().detect_every,
) -> JSONResponse:
    if jobs.full():  # before reading a large upload for nothing
        raise _queue_full()
    uploads = await _read_uploads(request, "video", 1, service.upload_limit_mb)
    try:
        info = await run_in_threadpool(probe_video, uploads[0].data)
        job = await run_in_threadpool(
            lambda: jobs.submit(
                uploads[0].data, settings=LiveSettings(detect_every=detect_every), frames_total=info.frames
            )
        )
    except InvalidVideo as error:
        raise HTTPException(400, f"{uploads[0].name}: {error}") from None
    except QueueFull:
        raise _queue_full() from None
    return JSONResponse(_job_json(job), status_code=202, headers={"Location": f"/v1/videos/{job.id}"})


@_v1.get("/videos/{job_id}", response_model=VideoJob, responses=_errors(401, 404, 422), summary="A video job")
def get_video(job_id: str, jobs: Jobs) -> dict:
    return _job_json(_job(jobs, job_id))


@_v1.get(
    "/videos/{job_id}/{name}",
    response_class=StreamingResponse,
    responses={200: {"content": {"video/mp4": {}, "text/csv": {}}}, **_errors(401, 404, 409, 422)},
    summary="A finished job's results",
    description=f"`{ResultFile.VIDEO}`: the annotated video (H.264); `{ResultFile.CSV}`: one row per frame "
    "and face.",
)
def get_video_result(job_id: str, name: ResultFile, jobs: Jobs) -> StreamingResponse:
    try:
        file = jobs.open_result(job_id, name)
    except JobNotFound:
        raise _no_such_job(job_id) from None
    except JobNotDone:
        job = _job(jobs, job_id)
        reason = f"it failed: {job.error}" if job.status == "failed" else f"it is {job.status}"
        raise HTTPException(409, f"The job has no {name}: {reason}.") from None
    size = Path(file.name).stat().st_size
    return StreamingResponse(
        _chunks(file), media_type=MEDIA_TYPES[name], headers={"Content-Length": str(size)}
    )


@_v1.delete(
    "/videos/{job_id}",
    status_code=204,
    response_class=Response,
    responses=_errors(401, 404, 422),
    summary="Delete a job and its files (a running job stops)",
)
def delete_video(job_id: str, jobs: Jobs) -> Response:
    try:
        jobs.delete(job_id)
    except JobNotFound:
        raise _no_such_job(job_id) from None
    return Response(status_code=204)


def _job(jobs: VideoJobs, job_id: str) -> Job:
    try:
        return jobs.get(job_id)
    except JobNotFound:
        raise _no_such_job(job_id) from None


def _job_json(job: Job) -> dict:
    return VideoJob.model_validate(job, from_attributes=True).model_dump()


def _chunks(file: BinaryIO) -> Iterator[bytes]:
    with file:
        while chunk := file.read(CHUNK_BYTES):
            yield chunk


def _no_such_job(job_id: str) -> HTTPException:
    return HTTPException(404, "No such video job: it never existed, was deleted or has expired.")


def _queue_full() -> HTTPException:
    return HTTPException(
        429,
        "The video queue is full; try again in a minute.",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


# --- Uploads ------------------------------------------------------------------------------


class Upload(NamedTuple):
    name: str  # the file name the client sent
    media_type: str | None  # the part's Content-Type, if it had one
    data: bytes


async def _read_uploads(
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


def _header_safe(text: str) -> str:
    """A file name for a quoted header parameter: printable ASCII without quotes or backslashes."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in text)
