"""The service itself: whether it is up (open to all) and which model it uses."""

from __future__ import annotations

from fastapi import APIRouter

from emotion.api.dependencies import JobsDep, ServiceDep
from emotion.api.schemas import Health, ModelInfo, error_responses

health_router = APIRouter()
router = APIRouter()


@health_router.get("/healthz", response_model=Health, summary="Whether the service is up")
def healthz(jobs: JobsDep) -> dict:
    return {"status": "ok", "video_jobs": jobs.counts()}


@router.get("/model", response_model=ModelInfo, responses=error_responses(401), summary="The model in use")
def model_info(service: ServiceDep) -> dict:
    metadata = service.model.classifier.metadata
    return {
        "file": service.model.path.name,
        "sha256": service.model.classifier.sha256,
        "source": service.model.origin,
        "classes": list(metadata.classes),
        "input_shape": None if metadata.input_shape is None else list(metadata.input_shape),
        "preprocessing": metadata.preprocessing,
        "metrics": dict(metadata.metrics),
    }
