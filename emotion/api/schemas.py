"""What the service answers: the OpenAPI schema's models and documented error answers.

Photo results are built by emotion.results; FaceResult documents them, and a test checks that
it describes them exactly.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from emotion.faces import FINDERS
from emotion.jobs import Status
from emotion.labels import EMOTIONS
from emotion.remote import ModelOrigin


def finder_enum(schema: dict[str, Any]) -> None:
    """A face finder's name: one of those registered when the schema is made (emotion.faces.FINDERS)."""
    schema["enum"] = list(FINDERS)


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
    detector: str = Field(
        description="The face finder that looked for the faces", json_schema_extra=finder_enum
    )
    faces: list[FaceResult] = Field(description="Every face found, largest first; empty when none")


class PhotoResults(BaseModel):
    results: list[PhotoResult] = Field(description="One per uploaded photo, in the upload's order")


class VideoJob(BaseModel):
    id: str
    status: Status
    frames_done: int
    frames_total: int = Field(
        description="Frames to analyse (every Nth one of a video over 30 fps), as the container declares "
        "them or estimated from its duration, then counted as they are analysed; 0 if unknown"
    )
    error: str | None = Field(description="Why the job failed")
    expires_in_s: float | None = Field(description="Seconds until the results are removed, once finished")


class ModelInfo(BaseModel):
    file: str = Field(description="The model file's name")
    sha256: str = Field(description="The SHA-256 of the model file")
    source: ModelOrigin = Field(
        description="Where the model came from: the bundled file, MODEL_URL, or a file named by the operator"
    )
    classes: list[str]
    input_shape: list[int] | None
    preprocessing: str | None
    metrics: dict[str, Any] = Field(description="The model's own figures, as stored in its file by training")


class Health(BaseModel):
    status: Literal["ok"]
    video_jobs: dict[str, int] = Field(description="Jobs per state")


_ERROR_DESCRIPTIONS = {
    400: "The file cannot be read as an image or a video",
    401: "A valid API key is missing",
    404: "No such job (never created, deleted or expired)",
    409: "The job has no results: it is not done",
    413: "A file or the request is over the size limit",
    415: "The request or a file is not of a type this endpoint takes",
    422: "Bad parameters (the message says which)",
    429: "The video queue is full (retry after Retry-After seconds), or too many of your jobs are kept",
    503: "Too much is being uploaded at the moment; retry after Retry-After seconds",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route, for its `responses`."""
    return {code: {"model": ErrorBody, "description": _ERROR_DESCRIPTIONS[code]} for code in codes}


def multipart_body(name: str, description: str, max_files: int) -> dict[str, Any]:
    """A route's request body, for its `openapi_extra`: `max_files` files in the form field `name`.
    (The routes read their uploads themselves, so FastAPI cannot describe them.)"""
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
