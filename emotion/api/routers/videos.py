"""/v1/videos: a video becomes a job in a bounded queue (emotion.jobs); its results are fetched
once it is done, and removed after API_RESULT_TTL_S or when the job is deleted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from emotion.api.dependencies import ClientDep, DetectorQuery, JobsDep, ServiceDep, UploadBudgetDep
from emotion.api.schemas import VideoJob, error_responses, multipart_body
from emotion.api.uploads import receive_uploads
from emotion.events import VideoFaces
from emotion.faces import DEFAULT_FINDER
from emotion.history import DetectionLog, log_result
from emotion.jobs import Job, JobNotDone, JobNotFound, QueueFull, ResultFile, TooManyKept, VideoJobs
from emotion.live import LiveSettings
from emotion.request import AnalysisRequest
from emotion.video import InvalidVideo, VideoResult

CHUNK_BYTES = 1024 * 1024  # result files are sent in pieces of this size
MEDIA_TYPES = {ResultFile.VIDEO: "video/mp4", ResultFile.CSV: "text/csv"}

router = APIRouter()


@router.post(
    "/videos",
    status_code=202,
    response_model=VideoJob,
    summary="Start analysing a video",
    description="One video (MP4, MOV, AVI, WebM, ...; within the page's upload limit) as a multipart "
    "form file. The answer is a job: poll it at its Location until its status is done, then fetch "
    "annotated.mp4 and faces.csv.",
    responses=error_responses(400, 401, 413, 415, 422, 429, 503),
    openapi_extra=multipart_body("file", "The video", 1),
)
async def post_video(
    request: Request,
    service: ServiceDep,
    jobs: JobsDep,
    budget: UploadBudgetDep,
    client: ClientDep,
    detect_every: Annotated[
        int,
        Query(
            ge=1,
            description="Search whole frames for faces on every Nth frame and follow them in between; "
            "1 searches every frame (slower, a little more precise boxes).",
        ),
    ] = LiveSettings().detect_every,
    detector: DetectorQuery = DEFAULT_FINDER,
) -> JSONResponse:
    if jobs.full():  # before reading a large upload for nothing
        raise _queue_full(jobs)
    settings = AnalysisRequest.of(finder=detector, detect_every=detect_every, origin="api").live_settings()
    async with receive_uploads(request, "video", 1, service.upload_limit_mb, budget) as uploads:
        upload = uploads[0]
        try:
            job = await run_in_threadpool(
                lambda: jobs.submit(upload.file, settings=settings, name=upload.name, owner=client)
            )
        except InvalidVideo as error:
            raise HTTPException(400, f"{upload.name}: {error}") from None
        except QueueFull:
            raise _queue_full(jobs) from None
        except TooManyKept:
            raise HTTPException(
                429,
                f"{jobs.max_kept_per_owner} finished video jobs are kept for you: fetch their results "
                "and delete them, or wait for them to expire.",
            ) from None
    return JSONResponse(_job_json(job), status_code=202, headers={"Location": f"/v1/videos/{job.id}"})


@router.get(
    "/videos/{job_id}",
    response_model=VideoJob,
    responses=error_responses(401, 404, 422),
    summary="A video job",
)
def get_video(job_id: str, jobs: JobsDep) -> dict:
    return _job_json(_job(jobs, job_id))


@router.get(
    "/videos/{job_id}/{name}",
    response_class=StreamingResponse,
    responses={200: {"content": {"video/mp4": {}, "text/csv": {}}}, **error_responses(401, 404, 409, 422)},
    summary="A finished job's results",
    description=f"`{ResultFile.VIDEO}`: the annotated video (H.264); `{ResultFile.CSV}`: one row per frame "
    "and face.",
)
def get_video_result(job_id: str, name: ResultFile, jobs: JobsDep) -> StreamingResponse:
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


@router.delete(
    "/videos/{job_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(401, 404, 422),
    summary="Delete a job and its files (a running job stops)",
)
def delete_video(job_id: str, jobs: JobsDep) -> Response:
    try:
        jobs.delete(job_id)
    except JobNotFound:
        raise _no_such_job(job_id) from None
    return Response(status_code=204)


def log_video(
    log: DetectionLog,
    model_sha256: str,
    name: str,
    settings: LiveSettings,
    result: VideoResult,
    started_utc: float,
) -> None:
    """A finished job's faces to the detection log (VideoJobs' on_result, with API_LOG_DETECTIONS on)."""
    log_result(
        log,
        VideoFaces(result.rows, result.width, result.height),
        name=name,
        request=AnalysisRequest(engagement_preset=settings.engagement_preset, origin="api"),
        model_sha256=model_sha256,
        utc_time=started_utc,
    )


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


def _queue_full(jobs: VideoJobs) -> HTTPException:
    retry_after_s = jobs.retry_after_s()  # when the job ahead should be done
    return HTTPException(
        429,
        f"The video queue is full; try again in {retry_after_s} s.",
        headers={"Retry-After": str(retry_after_s)},
    )
