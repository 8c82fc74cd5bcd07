"""What the routes are given (FastAPI dependencies): the service's model and limits, the video
jobs, the upload budget, the detection log, who is asking, the face finder a
request asks for, and the API key check.

Dependencies are coroutines: FastAPI would run plain functions in its thread pool, a hop for nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any, NamedTuple

from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from emotion.api.schemas import finder_enum
from emotion.api.uploads import UploadBudget
from emotion.faces import FINDERS
from emotion.history import DetectionLog
from emotion.jobs import VideoJobs
from emotion.remote import LoadedModel


class Service(NamedTuple):
    """What every request of one app shares, set by create_app."""

    model: LoadedModel
    key_digests: tuple[bytes, ...]  # SHA-256 of each API key; empty: no key needed
    upload_limit_mb: int


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


async def _service(request: Request) -> Service:
    return request.app.state.service


async def _jobs(request: Request) -> VideoJobs:
    return request.app.state.jobs


async def _detection_log(request: Request) -> DetectionLog | None:
    return request.app.state.detection_log


async def _upload_budget(request: Request) -> UploadBudget:
    return request.app.state.upload_budget


async def _client(request: Request) -> str:
    """Who is asking: the API key's digest when keys are set (check_key has let it in), else the
    client's address. (The header is read here, not through _bearer, which would document a key
    where none is needed.)"""
    scheme, key = get_authorization_scheme_param(request.headers.get("Authorization"))
    if request.app.state.service.key_digests and scheme.lower() == "bearer":
        return digest(key).hex()
    return request.client.host if request.client is not None else ""


_bearer = HTTPBearer(auto_error=False, description="One of the keys in the API_KEYS setting")

ServiceDep = Annotated[Service, Depends(_service)]
JobsDep = Annotated[VideoJobs, Depends(_jobs)]
DetectionLogDep = Annotated[DetectionLog | None, Depends(_detection_log)]  # None: API_LOG_DETECTIONS off
UploadBudgetDep = Annotated[UploadBudget, Depends(_upload_budget)]
ClientDep = Annotated[str, Depends(_client)]


def _finder_name(name: str) -> str:
    """A face finder's name, checked against those registered when the request comes."""
    if name not in FINDERS:
        expected = " or ".join(repr(known) for known in FINDERS)
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
    return name


def _finder_query_schema(schema: dict[str, Any]) -> None:
    finder_enum(schema)
    schema["description"] = "The face finder: " + "; ".join(
        f"{name}: {finder.summary}" for name, finder in FINDERS.items()
    )


# Checked, and listed in the schema, as the finders are when the request comes or the schema is made.
DetectorQuery = Annotated[str, AfterValidator(_finder_name), Query(json_schema_extra=_finder_query_schema)]


async def check_key(
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless the request carries one of the API keys."""
    given = digest(credentials.credentials) if credentials is not None else b""
    matched = False
    for key_digest in service.key_digests:  # all of them, each in constant time: the timing tells nothing
        matched |= hmac.compare_digest(given, key_digest)
    if not matched:
        raise HTTPException(
            401,
            "A valid API key is required: send it as the header 'Authorization: Bearer KEY'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
