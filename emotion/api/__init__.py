"""The HTTP API (`python -m emotion serve`): photos and videos in, the same JSON and annotated media out.

An ASGI app (FastAPI under uvicorn) over the engine: the model is loaded once, as the page loads
it; photos are analysed while the request waits, videos as jobs in a bounded queue (see
emotion.jobs). Uploads are read into memory and limited as on the page; a video waits for its
turn in its job's folder. Every error is JSON, `{"detail": "what went wrong"}`. When API_KEYS
is set, the /v1 endpoints need `Authorization: Bearer KEY`, with KEY one of them.

The package, in FastAPI's "bigger applications" layout:
  app.py           create_app: the app factory, its lifespan and its error answers
  settings.py      ApiSettings, read from the secrets file or the environment
  schemas.py       what the service answers (the OpenAPI schema)
  dependencies.py  what the routes are given: the service, the video jobs, the API key check
  uploads.py       reading multipart uploads within the limits
  routers/         the endpoints: service.py (/healthz, /v1/model), photos.py, videos.py
"""

from emotion.api.app import create_app
from emotion.api.settings import ApiSettings

__all__ = ["ApiSettings", "create_app"]
