"""POST /v1/photos: photos are analysed while the request waits, in the server's photo slots
(emotion.pipeline.photo_slot)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from emotion.api.dependencies import DetectionLogDep, DetectorQuery, ServiceDep, UploadBudgetDep
from emotion.api.schemas import PhotoResults, error_responses, multipart_body
from emotion.api.uploads import Upload, header_safe, receive_uploads
from emotion.faces import DEFAULT_FINDER
from emotion.history import log_result
from emotion.image import SUPPORTED, InvalidImage
from emotion.pipeline import PHOTO_BATCH_MAX, Photo, photo_faces, photo_slot
from emotion.request import AnalysisRequest

if TYPE_CHECKING:
    from emotion.classifier import EmotionClassifier

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
    log: DetectionLogDep,
    budget: UploadBudgetDep,
    annotated: Annotated[
        bool, Query(description="Answer the annotated photo as a PNG instead of JSON (one photo only)")
    ] = False,
    detector: DetectorQuery = DEFAULT_FINDER,
) -> Response:
    analysis = AnalysisRequest.of(finder=detector, origin="api")
    async with receive_uploads(request, "image", PHOTO_BATCH_MAX, service.upload_limit_mb, budget) as uploads:
        if annotated and len(uploads) != 1:
            raise HTTPException(422, f"annotated=true takes exactly one photo, not {len(uploads)}.")
        classifier = service.model.classifier
        analysed, png = await anyio.to_thread.run_sync(_analyse, uploads, classifier, analysis, annotated)
        analysed_utc = time.time()
        for upload, photo in zip(uploads, analysed, strict=True):
            log_result(
                log,
                photo,
                name=upload.name,
                request=analysis,
                model_sha256=classifier.sha256,
                utc_time=analysed_utc,
            )
        if png is not None:
            stem = header_safe(Path(uploads[0].name).stem or "photo")
            disposition = f'inline; filename="{stem}-emotions.png"'
            return Response(png, media_type="image/png", headers={"Content-Disposition": disposition})
        # Each photo's JSON is what `python -m emotion predict --json` prints for the file.
        return JSONResponse(
            {"results": [photo.record(upload.name) for upload, photo in zip(uploads, analysed, strict=True)]}
        )


def _analyse(
    uploads: list[Upload], classifier: EmotionClassifier, analysis: AnalysisRequest, annotated: bool
) -> tuple[list[Photo], bytes | None]:
    """The uploads' photos, each decoded once, in one of the server's photo slots, and with
    `annotated` the one photo's annotated PNG, drawn there too. A photo that cannot be read is a
    400 that names it."""
    with photo_slot():
        analysed = []
        for upload in uploads:
            try:
                photo = photo_faces(upload.read(), classifier, analysis.detector)
            except InvalidImage as error:
                raise HTTPException(400, f"{upload.name}: {error}") from None
            analysed.append(photo)
        png = analysed[0].annotated_png() if annotated else None
        return [photo.released() for photo in analysed], png
