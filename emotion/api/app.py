"""create_app: the service with its model, settings, routes and error answers."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from emotion.api.dependencies import Service, check_key, digest
from emotion.api.routers import photos, service, videos
from emotion.api.routers.videos import log_video
from emotion.api.settings import ApiSettings
from emotion.api.uploads import UploadBudget
from emotion.history import DetectionLog
from emotion.jobs import VideoJobs
from emotion.remote import LoadedModel, resolve_model
from emotion.settings import read_secrets_file

logger = logging.getLogger(__name__)

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")  # what a 405's Allow may list


def create_app(settings: ApiSettings | None = None, model: LoadedModel | None = None) -> FastAPI:
    """The service, with its model loaded (None: as the page loads it). settings: None reads them
    as the page does. While the app runs (its lifespan) video jobs run, in a fresh folder each time,
    and with settings.detection_log the faces found go to that detection log."""
    secrets = read_secrets_file() if settings is None or model is None else None
    settings = settings or ApiSettings.from_settings(secrets)
    model = model or resolve_model(secrets)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log = DetectionLog(settings.detection_log) if settings.detection_log is not None else None
        jobs = VideoJobs(
            model.classifier,
            capacity=settings.video_queue,
            result_ttl_s=settings.result_ttl_s,
            workers=settings.video_workers,
            on_result=None if log is None else functools.partial(log_video, log, model.classifier.sha256),
        )
        jobs.start()
        app.state.jobs = jobs
        app.state.upload_budget = UploadBudget()
        app.state.detection_log = log
        try:
            yield
        finally:
            await run_in_threadpool(jobs.close)
            if log is not None:
                await run_in_threadpool(log.close)

    app = FastAPI(
        title="Emotion Lens API",
        version="1",
        summary="Faces and their emotions in photos and videos.",
        description='Photos are answered at once; videos become jobs. Errors are JSON: `{"detail": "..."}`. '
        "This page loads Swagger UI from a CDN (cdn.jsdelivr.net): without internet access it stays "
        "blank; the schema itself is at /openapi.json.",
        lifespan=lifespan,
    )
    if settings.api_keys:
        logger.info("%d API key(s) active: every /v1 request needs one", len(settings.api_keys))
    else:
        logger.info("No API key set: the API answers anyone who can reach it")
    app.state.service = Service(
        model=model,
        key_digests=tuple(digest(key) for key in settings.api_keys),
        upload_limit_mb=settings.upload_limit_mb,
    )
    app.add_exception_handler(RequestValidationError, _invalid_parameters)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(service.health_router)
    key_check = [Depends(check_key)] if settings.api_keys else []
    for router in (service.router, photos.router, videos.router):
        app.include_router(router, prefix="/v1", dependencies=key_check)
    return app


async def _invalid_parameters(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()
    )
    return JSONResponse({"detail": f"Invalid parameters: {problems}"}, status_code=422)


async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
    if error.status_code == 405:  # Starlette's Allow lists the methods of one route of the path only
        error.headers = {**(error.headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return await http_exception_handler(request, error)


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route answers at the request's path, asked of the routes themselves (as
    the router matches them), whatever the nesting of included routers."""
    return [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.router.routes
        )
    ]


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    logger.error("Error while answering %s %s", request.method, request.url.path, exc_info=error)
    return JSONResponse({"detail": "Internal error; it has been logged."}, status_code=500)
