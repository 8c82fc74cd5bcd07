"""POST /v1/photos: photos are analysed while the request waits, at most PHOTO_SLOTS at once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from emotion.api.dependencies import (
    DetectionLogDep,
    DetectorQuery,
    PhotoSlotsDep,
    Service,
    ServiceDep,
    UploadBudgetDep,
)
from emotion.api.schemas import PhotoResults, error_responses, multipart_body
from emotion.api.uploads import Upload, header_safe, receive_uploads
from emotion.engagement import DEFAULT_PRESET
from emotion.events import EventSource, photo_frames
from emotion.faces import DEFAULT_FINDER, detector_settings
from emotion.history import DetectionLog
from emotion.image import SUPPORTED, InvalidImage
from emotion.pipeline import PHOTO_BATCH_MAX, PhotoFaces, annotated_png, photo_faces
from emotion.results import photo_record

router = APIRouter()


@router.post(
    "/photos",
    summary="The faces and emotions in photos",
    description=f"One or more photos ({SUPPORTED}; up to {PHOTO_BATCH_MAX} per request, each within the "
    "page's upload limit) as multipart form files. The answer has one "
    "result per photo, as `python -m emotion predict --json` writes it. With `annotated=true` "
    "and one photo, the answer is the photo as a PNG with each face's box and emotion drawn on it.",
    response_model=PhotoResults,
    responses={
        200: {"content": {"image/png": {}}, "description": "The results, or the annotated PNG"},
        **error_responses(400, 401, 413, 415, 422, 503),
    },
    openapi_extra=multipart_body("files", "The photos", PHOTO_BATCH_MAX),
)
async def post_photos(
    request: Request,
    service: ServiceDep,
    slots: PhotoSlotsDep,
    log: DetectionLogDep,
    budget: UploadBudgetDep,
    annotated: Annotated[
        bool, Query(description="Answer the annotated photo as a PNG instead of JSON (one photo only)")
    ] = False,
    detector: DetectorQuery = DEFAULT_FINDER,
) -> Response:
    async with receive_uploads(request, "image", PHOTO_BATCH_MAX, service.upload_limit_mb, budget) as uploads:
        return await _answer(uploads, service, slots, log, annotated, detector)


async def _answer(
    uploads: list[Upload],
    service: Service,
    slots: anyio.CapacityLimiter,
    log: DetectionLog | None,
    annotated: bool,
    detector: str,
) -> Response:
    if annotated and len(uploads) != 1:
        raise HTTPException(422, f"annotated=true takes exactly one photo, not {len(uploads)}.")
    classifier = service.model.classifier
    settings = detector_settings("photo", finder=detector)

    def analyse(upload: Upload) -> PhotoFaces:
        try:
            return photo_faces(upload.read(), classifier, settings)
        except InvalidImage as error:
            raise HTTPException(400, f"{upload.name}: {error}") from None

    analysed = await anyio.to_thread.run_sync(lambda: [analyse(upload) for upload in uploads], limiter=slots)
    for upload, photo in zip(uploads, analysed, strict=True):
        if log is not None and photo.faces:
            source = EventSource("photo", upload.name, "api", DEFAULT_PRESET, classifier.sha256)
            log.submit(source, photo_frames(photo.faces, photo.width, photo.height, time.time()))
    if annotated:
        upload, photo = uploads[0], analysed[0]
        png = await anyio.to_thread.run_sync(lambda: annotated_png(upload.read(), photo.faces), limiter=slots)
        disposition = f'inline; filename="{header_safe(Path(upload.name).stem or "photo")}-emotions.png"'
        return Response(png, media_type="image/png", headers={"Content-Disposition": disposition})
    # Each photo's JSON is what `python -m emotion predict --json` prints for the file.
    return JSONResponse(
        {
            "results": [
                photo_record(upload.name, photo.faces, detector)
                for upload, photo in zip(uploads, analysed, strict=True)
            ]
        }
    )
