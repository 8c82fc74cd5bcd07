"""The HTTP API: in-process through Starlette's test client, once under a real uvicorn, and a
bounded property-based run of schemathesis against its own OpenAPI schema."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import av
import cv2
import duckdb
import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from PIL import Image
from schemathesis import checks

from emotion.api import ApiSettings, create_app, uploads
from emotion.api.routers import photos
from emotion.api.schemas import PhotoResults
from emotion.api.settings import DEFAULT_RESULT_TTL_S, DEFAULT_VIDEO_QUEUE
from emotion.classifier import BUNDLED_MODEL, load_classifier
from emotion.image import encode_png
from emotion.labels import EMOTIONS
from emotion.model_file import read_metadata
from emotion.pipeline import PHOTO_BATCH_MAX, PHOTO_SLOTS, analyze_photo, annotated_png
from emotion.remote import LoadedModel
from emotion.results import CSV_COLUMNS
from emotion.settings import SettingsError
from scripts import samples
from scripts.browser import SERVER_START_TIMEOUT_S, free_port, healthy
from scripts.samples import REPO
from tests.conftest import CallsAtOnce, run_emotion
from tests.test_video import make_video

JOB_TIMEOUT_S = 300  # a generous bound for a short clip on a busy machine; not a speed check
KEYS = ("first-secret-key", "second-secret-key")


@pytest.fixture(autouse=True)
def temp_root(tmp_path, monkeypatch):
    """Temporary folders go to a folder of their own, which must be empty once the app has stopped."""
    root = tmp_path / "temp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root
    assert list(root.iterdir()) == []


# Built when the module is collected: schemathesis generates its tests from the app's schema.
MODEL = LoadedModel(load_classifier(BUNDLED_MODEL), "bundled", None)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(ApiSettings(), MODEL))


@pytest.fixture
def start():
    """start(**settings) -> a test client of a running app with those ApiSettings."""
    with contextlib.ExitStack() as stack:
        yield lambda **fields: stack.enter_context(TestClient(create_app(ApiSettings(**fields), MODEL)))


@pytest.fixture
def client(start) -> TestClient:
    return start()


def jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def face_video(astronaut_rgb) -> bytes:
    """A 2 s, 10 fps MP4 of the astronaut's face drifting across a 320x240 frame."""
    face = cv2.resize(astronaut_rgb[30:230, 120:320], (140, 140), interpolation=cv2.INTER_AREA)
    frames = []
    for index in range(20):
        frame = np.full((240, 320, 3), 200, dtype=np.uint8)
        left = 20 + 6 * index
        frame[50:190, left : left + 140] = face
        frames.append(frame)
    return make_video(frames, fps=10)


def post_photos(client: TestClient, *files, query: str = "", **kwargs):
    """files: (name, bytes, media type) each."""
    return client.post(f"/v1/photos{query}", files=[("files", file) for file in files], **kwargs)


def post_video(client: TestClient, data: bytes, query: str = "", media_type: str = "video/mp4"):
    return client.post(f"/v1/videos{query}", files={"file": ("clip.mp4", data, media_type)})


def wait_for_job(client: TestClient, job_id: str) -> dict:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        response = client.get(f"/v1/videos/{job_id}")
        if response.status_code != 200 or response.json()["status"] in ("done", "failed"):
            return response.json()
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish within {JOB_TIMEOUT_S} s")


# --- Photos -------------------------------------------------------------------------------


def test_photo_results_are_the_command_lines_json_for_the_same_files(
    client, tmp_path, astronaut_rgb, group_photo_rgb
):
    photos = {"astronaut.png": encode_png(astronaut_rgb), "group.jpg": jpeg(group_photo_rgb)}
    for name, data in photos.items():
        (tmp_path / name).write_bytes(data)
    command_line = run_emotion("predict", *photos, "--json", "--model", BUNDLED_MODEL, cwd=tmp_path)
    assert command_line.returncode == 0, command_line.stderr
    expected = [json.loads(line) for line in command_line.stdout.splitlines()]

    response = post_photos(
        client,
        ("astronaut.png", photos["astronaut.png"], "image/png"),
        ("group.jpg", photos["group.jpg"], "image/jpeg"),
    )

    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == {"results": expected}
    assert PhotoResults.model_validate(response.json()).model_dump() == response.json()  # as documented
    assert [len(result["faces"]) for result in expected] == [1, 12]  # the comparison covers real faces


def test_annotated_photo_is_the_engines_png_of_the_photo_with_its_faces_drawn(client, astronaut_rgb):
    photo = jpeg(astronaut_rgb)
    response = post_photos(client, ("astronaut.jpg", photo, "image/jpeg"), query="?annotated=true")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == 'inline; filename="astronaut-emotions.png"'
    assert response.content == annotated_png(photo, analyze_photo(photo, MODEL.classifier))
    annotated = np.asarray(Image.open(io.BytesIO(response.content)))
    assert annotated.shape == astronaut_rgb.shape and not np.array_equal(annotated, astronaut_rgb)


def test_a_photo_without_a_face_has_an_empty_list(client):
    response = post_photos(
        client, ("grey.png", encode_png(np.full((120, 160, 3), 128, np.uint8)), "image/png")
    )
    assert response.status_code == 200
    assert response.json() == {"results": [{"file": "grey.png", "detector": "blazeface", "faces": []}]}


def test_an_unreadable_photo_is_a_400_naming_the_file(client, astronaut_rgb):
    response = post_photos(
        client,
        ("fine.png", encode_png(astronaut_rgb), "image/png"),
        ("damaged.jpg", b"\xff\xd8\xff\xe0 not really a JPEG", "image/jpeg"),
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("damaged.jpg: ")


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [
        ({"files": [("files", ("notes.txt", b"hello", "text/plain"))]}, 415, "notes.txt is text/plain"),
        ({"files": [("files", ("clip.mp4", b"\x00" * 64, "video/mp4"))]}, 415, "not a photo"),
        ({"json": {"files": []}}, 415, "multipart/form-data"),
        ({"files": {"comment": (None, "no file here")}}, 422, "No photo in the request"),
    ],
    ids=["text", "video", "json body", "no file"],
)
def test_wrong_requests_get_a_clear_json_error(client, request_kwargs, status, message):
    response = client.post("/v1/photos", **request_kwargs)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["detail"]


def test_bad_parameters_are_422(client, astronaut_rgb):
    photo = ("a.png", encode_png(astronaut_rgb), "image/png")
    response = post_photos(client, photo, query="?annotated=perhaps")
    assert response.status_code == 422
    assert response.json()["detail"].startswith("Invalid parameters: query.annotated: ")
    two = post_photos(client, photo, photo, query="?annotated=true")
    assert two.status_code == 422 and "exactly one photo, not 2" in two.json()["detail"]
    many = post_photos(client, *[photo] * (PHOTO_BATCH_MAX + 1))  # as many as the page analyses at once
    assert many.status_code == 422 and f"at most {PHOTO_BATCH_MAX} photo" in many.json()["detail"]


def test_photos_are_analysed_at_most_photo_slots_at_a_time(client, monkeypatch, astronaut_rgb):
    calls = CallsAtOnce(photos.photo_faces, PHOTO_SLOTS)
    monkeypatch.setattr(photos, "photo_faces", calls)
    photo = ("a.png", encode_png(astronaut_rgb), "image/png")
    with ThreadPoolExecutor(PHOTO_SLOTS + 1) as clients:
        answers = list(clients.map(lambda _: post_photos(client, photo), range(PHOTO_SLOTS + 1)))
    assert [answer.status_code for answer in answers] == [200] * (PHOTO_SLOTS + 1)
    assert calls.most == PHOTO_SLOTS


def test_large_photos_wait_on_disk_and_uploads_in_flight_are_bounded(
    client, monkeypatch, temp_root, astronaut_rgb
):
    large = encode_png(cv2.resize(astronaut_rgb, (1500, 1500)))  # over SPOOL_BYTES
    assert len(large) > uploads.SPOOL_BYTES

    def spooled() -> list[str]:  # the temporary files beside the video jobs' folder
        return [name for name in os.listdir(temp_root) if not name.startswith("emotion-video-jobs-")]

    seen = []
    analyse = photos.photo_faces
    monkeypatch.setattr(photos, "photo_faces", lambda *args: seen.append(spooled()) or analyse(*args))
    assert post_photos(client, ("large.png", large, "image/png")).status_code == 200
    assert len(seen) == 1 and len(seen[0]) == 1  # the upload was a temporary file, not held in memory
    assert spooled() == []  # and it is gone

    budget = client.app.state.upload_budget
    assert budget.held == 0  # given back
    budget.held = budget.max_bytes - len(large) // 2  # as if other uploads were arriving
    busy = post_photos(client, ("large.png", large, "image/png"))
    assert busy.status_code == 503 and busy.headers["retry-after"] == str(uploads.RETRY_AFTER_S)
    assert "too many uploads" in busy.json()["detail"]
    assert budget.held == budget.max_bytes - len(large) // 2  # what the refused request took is back
    budget.held = 0
    assert post_photos(client, ("large.png", large, "image/png")).status_code == 200


def test_an_upload_the_client_abandons_is_one_info_line(client, caplog):
    caplog.set_level(logging.INFO)
    messages = [
        {
            "type": "http.request",
            "body": b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n',
            "more_body": True,
        },
        {"type": "http.disconnect"},
    ]
    sent = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/photos",
        "raw_path": b"/v1/photos",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"multipart/form-data; boundary=b"), (b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "app": client.app,
    }
    client.portal.call(client.app, scope, receive, send)
    assert [record.levelno for record in caplog.records if "client left" in record.getMessage()] == [
        logging.INFO
    ]
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


class RawUpload:
    """A POST /v1/photos sent straight to the app, one body chunk at a time, as a slow or departing
    client sends it: `chunks` (bytes, or a number of seconds to wait), then, if `leave`, a disconnect."""

    def __init__(self, client: TestClient, chunks, *, leave: bool = False, address: str = "127.0.0.1"):
        self.messages = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
        self.messages.append(
            {"type": "http.disconnect"}
            if leave
            else {"type": "http.request", "body": b"", "more_body": False}
        )
        self.read = 0  # chunks the app asked for
        self.sent = []
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/photos",
            "raw_path": b"/v1/photos",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", b"multipart/form-data; boundary=b"), (b"host", b"testserver")],
            "client": (address, 1234),
            "server": ("testserver", 80),
            "app": client.app,
        }
        client.portal.call(client.app, scope, self._receive, self._send)

    async def _receive(self):
        import anyio

        while self.messages and not isinstance(self.messages[0].get("body", b""), bytes):
            await anyio.sleep(self.messages.pop(0)["body"])
        self.read += 1
        if not self.messages:  # asked again after the end: the client waits for the answer
            await anyio.sleep_forever()
        return self.messages.pop(0)

    async def _send(self, message):
        self.sent.append(message)

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def detail(self) -> str:
        return json.loads(b"".join(message.get("body", b"") for message in self.sent[1:]))["detail"]


def part(name: str, filename: str | None = None, media_type: str = "image/png") -> bytes:
    """A multipart part's boundary and headers, for RawUpload (boundary "b")."""
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    headers = f"Content-Disposition: {disposition}\r\n" + (
        f"Content-Type: {media_type}\r\n" if filename else ""
    )
    return f"--b\r\n{headers}\r\n".encode()


def spooled(temp_root) -> list[str]:
    """The uploads' temporary files: what is in the temporary folder beside the video jobs' folder."""
    return [name for name in os.listdir(temp_root) if not name.startswith("emotion-video-jobs-")]


def test_a_part_without_a_filename_is_dropped_and_capped_as_it_streams(client, astronaut_rgb):
    photo = ("a.png", encode_png(astronaut_rgb), "image/png")
    small = client.post("/v1/photos", files={"files": photo}, data={"note": "x" * uploads.FIELD_BYTES})
    assert small.status_code == 200
    chunk = b"x" * (64 * 1024)
    large = RawUpload(client, [part("note"), *[chunk] * 100])
    assert large.status == 413 and "form field" in large.detail
    assert large.read <= 3  # refused as its bytes passed the cap, not once 6 MB had come
    assert client.app.state.upload_budget.held == 0


def test_a_file_over_the_limit_is_refused_while_it_streams(start, temp_root):
    client = start(upload_limit_mb=1)
    chunk = b"\x00" * (256 * 1024)
    upload = RawUpload(client, [part("files", "big.png"), *[chunk] * 40])  # 10 MB
    assert upload.status == 413 and upload.detail == "big.png is larger than 1 MB, the limit per photo."
    assert upload.read <= 7
    assert spooled(temp_root) == []
    typed = RawUpload(client, [part("files", "notes.txt", "text/plain"), *[chunk] * 40])
    assert typed.status == 415 and typed.read <= 2  # refused as its headers ended


@pytest.mark.parametrize("cut_by", ["client leaving", "budget"])
def test_a_file_cut_off_while_it_arrives_is_removed_at_once(client, temp_root, monkeypatch, cut_by):
    import gc

    chunk = b"\x00" * (512 * 1024)
    budget = client.app.state.upload_budget
    if cut_by == "budget":
        budget.held = budget.max_bytes - 4 * len(chunk)  # others' uploads, arriving
    gc.disable()  # nothing is left for the garbage collector to remove
    try:
        upload = RawUpload(client, [part("files", "a.png"), *[chunk] * 8], leave=cut_by == "client leaving")
        assert spooled(temp_root) == []
    finally:
        gc.enable()
    assert upload.status == (400 if cut_by == "client leaving" else 503)
    budget.held = 0


def test_a_client_gets_a_share_of_the_upload_budget(client, astronaut_rgb):
    large = encode_png(cv2.resize(astronaut_rgb, (1500, 1500)))
    budget = client.app.state.upload_budget
    budget.max_client_bytes = len(large) // 2
    busy = post_photos(client, ("large.png", large, "image/png"))
    assert busy.status_code == 429 and busy.headers["retry-after"] == str(uploads.RETRY_AFTER_S)
    assert "the most one client may send at once" in busy.json()["detail"]
    assert budget.held == 0 and budget.held_by == {}
    budget.max_client_bytes = 2 * len(large)
    assert post_photos(client, ("large.png", large, "image/png")).status_code == 200


def test_a_body_that_stalls_or_trickles_is_408(client, monkeypatch):
    monkeypatch.setattr(uploads, "IDLE_TIMEOUT_S", 0.2)
    stalled = RawUpload(client, [part("files", "a.png"), b"\x00" * 1000, 1.0, b"\x00"])
    assert stalled.status == 408 and "nothing arrived for" in stalled.detail
    monkeypatch.setattr(uploads, "GRACE_S", 0.05)
    trickle = RawUpload(client, [part("files", "a.png"), *[b"\x00", 0.03] * 10])
    assert trickle.status == 408 and "too slow" in trickle.detail
    assert client.app.state.upload_budget.held == 0


def test_a_wrong_method_is_405_with_the_methods_that_path_takes(client):
    for method, path, allowed in (
        ("PUT", "/v1/photos", "POST"),
        ("POST", "/healthz", "GET"),
        ("POST", "/v1/videos/abc", "GET, DELETE"),
        ("DELETE", "/v1/videos/abc/faces.csv", "GET"),
    ):
        response = client.request(method, path)
        assert response.status_code == 405 and response.headers["allow"] == allowed


def test_files_over_the_size_limit_are_413(start, astronaut_rgb):
    client = start(upload_limit_mb=1)
    big = np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)  # ~1.9 MB as PNG
    response = post_photos(
        client,
        ("noise.png", encode_png(big), "image/png"),
        ("small.png", encode_png(astronaut_rgb), "image/png"),
    )
    assert response.status_code == 413
    assert response.json()["detail"] == "noise.png is larger than 1 MB, the limit per photo."
    # A body larger than a batch of such photos is refused from its Content-Length, before it is read.
    body = b"\x00" * ((PHOTO_BATCH_MAX + 1) * 1024 * 1024)
    response = client.post(
        "/v1/photos", content=body, headers={"Content-Type": "multipart/form-data; boundary=x"}
    )
    assert response.status_code == 413 and "too large" in response.json()["detail"]


# --- Videos -------------------------------------------------------------------------------


def test_a_video_job_runs_to_its_annotated_mp4_and_csv_and_can_be_deleted(client, face_video):
    response = post_video(client, face_video, "?detect_every=2")
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/videos/{job['id']}"
    assert job["status"] in ("queued", "running") and job["frames_total"] == 20 and job["error"] is None

    job = wait_for_job(client, job["id"])
    assert job["status"] == "done" and job["frames_done"] == job["frames_total"] == 20
    assert 0 < job["expires_in_s"] <= DEFAULT_RESULT_TTL_S

    video = client.get(f"/v1/videos/{job['id']}/annotated.mp4")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert int(video.headers["content-length"]) == len(video.content)
    with av.open(io.BytesIO(video.content)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 20
    table = client.get(f"/v1/videos/{job['id']}/faces.csv")
    assert table.status_code == 200 and table.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(table.text)))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) > 10

    assert client.delete(f"/v1/videos/{job['id']}").status_code == 204
    for path in ("", "/annotated.mp4", "/faces.csv"):
        gone = client.get(f"/v1/videos/{job['id']}{path}")
        assert gone.status_code == 404 and "No such video job" in gone.json()["detail"]
    assert client.delete(f"/v1/videos/{job['id']}").status_code == 404


def test_deleting_a_running_job_stops_it_and_removes_its_folder(client, face_video):
    job_id = post_video(client, face_video, "?detect_every=1").json()["id"]
    while client.get(f"/v1/videos/{job_id}").json()["status"] == "queued":
        time.sleep(0.01)
    assert client.delete(f"/v1/videos/{job_id}").status_code == 204
    assert client.get(f"/v1/videos/{job_id}").status_code == 404
    folder = client.app.state.jobs.folder
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while any(folder.iterdir()) and time.monotonic() < deadline:  # the worker stops at its next frame
        time.sleep(0.05)
    assert list(folder.iterdir()) == []
    assert client.get("/healthz").json()["video_jobs"] == {"queued": 0, "running": 0, "done": 0, "failed": 0}


def test_results_are_not_there_before_the_job_is_done_and_a_full_queue_is_429(start, face_video):
    client = start(video_workers=0, video_queue=1)  # no worker: the queued job stays queued
    job = post_video(client, face_video).json()
    early = client.get(f"/v1/videos/{job['id']}/annotated.mp4")
    assert (
        early.status_code == 409 and early.json()["detail"] == "The job has no annotated.mp4: it is queued."
    )
    full = post_video(client, face_video)
    assert full.status_code == 429 and full.headers["retry-after"] == str(
        client.app.state.jobs.retry_after_s()
    )
    assert "queue is full" in full.json()["detail"]
    assert client.get("/healthz").json()["video_jobs"]["queued"] == 1
    assert client.delete(f"/v1/videos/{job['id']}").status_code == 204  # a queued job can be deleted
    assert client.get("/healthz").json()["video_jobs"]["queued"] == 0


def test_a_full_queues_retry_after_is_when_the_job_ahead_should_be_done(start, face_video, monkeypatch):
    from emotion import jobs

    monkeypatch.setattr(jobs, "ASSUMED_FRAMES_PER_S", 2.0)
    client = start(video_workers=0, video_queue=1)
    queued = post_video(client, face_video).json()  # 20 frames, none running: 10 s at 2 a second
    full = post_video(client, face_video)
    assert full.status_code == 429 and full.headers["retry-after"] == "10"
    assert "try again in 10 s" in full.json()["detail"]
    job = client.app.state.jobs._jobs[queued["id"]]  # as if a worker had run it 30 s, 5 of 20 frames done
    job.status, job.frames_done, job.started_at = "running", 5, time.monotonic() - 30
    assert 90 <= client.app.state.jobs.retry_after_s() <= 91  # 15 frames left at 1 every 6 s
    job.frames_done = 20
    assert client.app.state.jobs.retry_after_s() == jobs.MIN_RETRY_AFTER_S


def test_a_deleted_queued_job_frees_its_place_at_once(start, face_video):
    client = start(video_workers=0, video_queue=1)
    job = post_video(client, face_video).json()
    assert post_video(client, face_video).status_code == 429
    assert client.delete(f"/v1/videos/{job['id']}").status_code == 204
    assert post_video(client, face_video).status_code == 202


def test_finished_jobs_kept_are_capped_per_client_and_in_total(start, face_video):
    client = start()
    jobs = client.app.state.jobs
    jobs.max_kept_per_owner = 2
    first, second = (post_video(client, face_video).json()["id"] for _ in range(2))
    assert wait_for_job(client, first)["status"] == wait_for_job(client, second)["status"] == "done"
    refused = post_video(client, face_video)
    assert refused.status_code == 429 and "2 finished video jobs are kept for you" in refused.json()["detail"]
    assert client.delete(f"/v1/videos/{first}").status_code == 204
    third = post_video(client, face_video).json()["id"]
    jobs.max_kept = 1  # in total: the oldest finished job makes room
    assert wait_for_job(client, third)["status"] == "done"
    assert client.get(f"/v1/videos/{second}").status_code == 404
    assert client.get("/healthz").json()["video_jobs"]["done"] == 1
    assert len(list(jobs.folder.iterdir())) == 1


def test_uploaded_videos_are_probed_at_most_probe_slots_at_a_time(start, face_video, monkeypatch):
    from emotion import jobs

    calls = CallsAtOnce(jobs.probe_video, jobs.PROBE_SLOTS)
    monkeypatch.setattr(jobs, "probe_video", calls)
    client = start(video_workers=0, video_queue=jobs.PROBE_SLOTS + 1)
    with ThreadPoolExecutor(jobs.PROBE_SLOTS + 1) as clients:
        answers = list(clients.map(lambda _: post_video(client, face_video), range(jobs.PROBE_SLOTS + 1)))
    assert [answer.status_code for answer in answers] == [202] * (jobs.PROBE_SLOTS + 1)
    assert calls.most == jobs.PROBE_SLOTS


def test_frames_total_counts_the_frames_to_analyse_from_submit_to_the_end(client):
    fast = make_video([np.full((48, 64, 3), 10 * index, np.uint8) for index in range(24)], fps=240)
    job = post_video(client, fast).json()
    assert job["frames_total"] == 3  # every 8th of 24 frames: 30 a second
    done = wait_for_job(client, job["id"])
    assert done["frames_done"] == done["frames_total"] == 3


def truncated_avi() -> bytes:
    """The first half of an AVI of 20 frames: its header, which declares them all, reads fine."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="avi") as output:
        stream = output.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for index in range(20):
            frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 10 * index, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def test_a_video_that_fails_while_analysed_is_a_failed_job_that_says_why(client):
    response = post_video(client, truncated_avi(), media_type="video/x-msvideo")
    assert response.status_code == 202 and response.json()["frames_total"] == 20
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "failed" and "damaged" in job["error"]
    missing = client.get(f"/v1/videos/{job['id']}/faces.csv")
    assert missing.status_code == 409 and "it failed: " in missing.json()["detail"]


@pytest.mark.parametrize(
    ("data", "query", "media_type", "status", "message"),
    [
        (b"not a video at all", "", "video/mp4", 400, "clip.mp4: The file is not a video file we can read"),
        (b"GIF89a", "", "image/gif", 415, "not a video"),
        (None, "?detect_every=0", "video/mp4", 422, "query.detect_every"),
    ],
    ids=["unreadable", "an image", "bad parameter"],
)
def test_wrong_videos_get_a_clear_json_error(client, face_video, data, query, media_type, status, message):
    response = post_video(client, data or face_video, query, media_type)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_a_concat_script_is_refused_alike_whether_the_file_it_names_exists(client, tmp_path, monkeypatch):
    (tmp_path / "secret").mkdir()
    samples.write_face_clip(tmp_path / "secret" / "private.avi")
    monkeypatch.chdir(tmp_path)  # the service's working folder, where FFmpeg would look
    answers = [
        post_video(client, f"ffconcat version 1.0\nfile secret/{name}\n".encode())
        for name in ("private.avi", "missing.avi")
    ]
    assert [answer.status_code for answer in answers] == [400, 400]
    assert answers[0].json() == answers[1].json()


def test_finished_results_expire_and_their_files_are_removed(start, face_video):
    client = start(result_ttl_s=0)
    job_id = post_video(client, face_video).json()["id"]
    assert "detail" in wait_for_job(client, job_id)  # 404 once finished: expired at once
    jobs = client.app.state.jobs
    assert list(jobs.folder.iterdir()) == []


# --- Keys, model, health, documentation ---------------------------------------------------


def test_api_keys_are_required_when_set_and_never_logged(start, caplog, astronaut_rgb):
    caplog.set_level(logging.DEBUG)
    client = start(api_keys=KEYS)
    photo = ("a.png", encode_png(astronaut_rgb), "image/png")
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Basic {KEYS[0]}"}):
        refused = post_photos(client, photo, headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer KEY" in refused.json()["detail"]
    assert client.get("/v1/model").status_code == 401
    for key in KEYS:
        assert post_photos(client, photo, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get("/healthz").status_code == 200 and client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert all(key not in caplog.text and key not in repr(ApiSettings(api_keys=KEYS)) for key in KEYS)


def test_without_keys_no_key_is_asked_for(client):
    assert client.get("/v1/model").status_code == 200
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


def test_model_describes_the_loaded_model_with_its_own_figures(client):
    info = client.get("/v1/model").json()
    metadata = read_metadata(BUNDLED_MODEL)
    assert info["sha256"] == hashlib.sha256(BUNDLED_MODEL.read_bytes()).hexdigest()
    assert info["file"] == "emotion_cnn.keras" and info["source"] == "bundled"
    assert info["classes"] == list(EMOTIONS) and info["metrics"] == metadata["metrics"]
    assert info["input_shape"] == [48, 48, 1]


def test_health_openapi_and_interactive_docs(client):
    assert client.get("/healthz").json() == {
        "status": "ok",
        "video_jobs": {"queued": 0, "running": 0, "done": 0, "failed": 0},
    }
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) == {
        "/healthz",
        "/v1/model",
        "/v1/photos",
        "/v1/videos",
        "/v1/videos/{job_id}",
        "/v1/videos/{job_id}/{name}",
    }
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    if "cdn.jsdelivr.net" in docs.text:  # Swagger UI from a CDN: the schema says so, for offline readers
        assert "without internet access" in client.get("/openapi.json").json()["info"]["description"]


def test_the_detection_log_gets_the_faces_only_with_api_log_detections_on(
    tmp_path, monkeypatch, caplog, astronaut_rgb, face_video
):
    path = tmp_path / "detections.duckdb"
    assert ApiSettings.from_settings({"HISTORY_PATH": str(path)}).detection_log is None  # off by default
    for value in ("false", "no", "0", False):
        assert ApiSettings.from_settings({"API_LOG_DETECTIONS": value}).detection_log is None
    assert ApiSettings.from_settings({"API_LOG_DETECTIONS": "maybe"}).detection_log is None
    assert "API_LOG_DETECTIONS must be true or false" in caplog.text
    monkeypatch.setenv("HISTORY_PATH", str(path))
    settings = ApiSettings.from_settings({"API_LOG_DETECTIONS": True})
    assert (
        settings.detection_log == path and ApiSettings.from_settings({"API_LOG_DETECTIONS": "on"}) == settings
    )

    with TestClient(create_app(replace(settings, detection_log=None), MODEL)) as client:
        assert post_photos(client, ("quiet.png", encode_png(astronaut_rgb), "image/png")).status_code == 200
    assert not path.exists()
    with TestClient(create_app(settings, MODEL)) as client:
        photo = ("portrait.png", encode_png(astronaut_rgb), "image/png")
        answer = post_photos(client, photo)
        assert answer.status_code == 200
        job = post_video(client, face_video).json()
        assert wait_for_job(client, job["id"])["status"] == "done"
        video_rows = list(csv.DictReader(io.StringIO(client.get(f"/v1/videos/{job['id']}/faces.csv").text)))
    faces_in_photo = len(answer.json()["results"][0]["faces"])
    assert faces_in_photo and video_rows
    with duckdb.connect(str(path), read_only=True) as connection:
        logged = connection.sql(
            "SELECT origin, source_kind, source, count(*) FROM events GROUP BY ALL ORDER BY source_kind"
        ).fetchall()
    assert logged == [
        ("api", "photo", "portrait.png", faces_in_photo),
        ("api", "video", "clip.mp4", len(video_rows)),
    ]


def test_settings_come_from_secrets_or_the_environment(monkeypatch, caplog):
    monkeypatch.setenv("API_KEYS", " one , two,,")
    monkeypatch.setenv("API_VIDEO_QUEUE", "inf")
    settings = ApiSettings.from_settings({"API_RESULT_TTL_S": "90"})
    assert settings.api_keys == ("one", "two") and settings.result_ttl_s == 90
    assert settings.video_queue == DEFAULT_VIDEO_QUEUE
    assert "API_VIDEO_QUEUE must be a number" in caplog.text
    assert ApiSettings.from_settings({"API_KEYS": ["three"]}).api_keys == ("three",)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "holds no key"),
        ([""], "holds no key"),
        (" , ", "holds no key"),
        (12345, "not int"),
        ([1, 2], "not list"),
    ],
)
def test_api_keys_that_hold_no_usable_key_stop_the_service_from_starting(value, message):
    with pytest.raises(SettingsError, match=message):
        ApiSettings.from_settings({"API_KEYS": value})


@pytest.mark.parametrize(
    ("value", "keys"),
    [
        ('["k1","k2"]', ("k1", "k2")),
        (' [ "a,b" ] ', ("a,b",)),
        ("[]", "holds no key"),
        ('[""]', "holds no key"),
        ('[" "]', "holds no key"),
        ("[1, 2]", "list of strings"),
        ('["k1", "k2"', "JSON list"),
    ],
)
def test_api_keys_from_the_environment_may_be_a_json_list(monkeypatch, value, keys):
    monkeypatch.setenv("API_KEYS", value)
    if isinstance(keys, tuple):
        assert ApiSettings.from_settings({}).api_keys == keys
    else:
        with pytest.raises(SettingsError, match=keys):
            ApiSettings.from_settings({})


def test_a_key_in_a_list_is_never_split_and_the_keys_are_counted_not_logged(caplog):
    caplog.set_level(logging.INFO)
    settings = ApiSettings.from_settings({"API_KEYS": ["one,two", " three "]})
    assert settings.api_keys == ("one,two", "three")
    create_app(settings, MODEL)
    assert "2 API key(s) active" in caplog.text and "one,two" not in caplog.text


def test_serve_refuses_to_start_on_api_keys_without_a_key(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "emotion", "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env={**os.environ, "API_KEYS": " , ", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "API_KEYS is set but holds no key" in result.stderr
    assert "Traceback" not in result.stderr


# --- A real server ------------------------------------------------------------------------


def test_python_m_emotion_serve_answers_over_http(tmp_path, temp_root, astronaut_rgb, client):
    port = free_port()
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith(("MODEL_", "API_"))
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "emotion", "serve", "--port", str(port)],
        cwd=tmp_path,  # no .streamlit/secrets.toml here
        env={**environment, "PYTHONPATH": str(REPO), "API_KEYS": KEYS[1], "TMPDIR": str(temp_root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not healthy(f"{base}/healthz"):
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        boundary = "emotion-test-boundary"
        photo = encode_png(astronaut_rgb)
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="astronaut.png"\r\n'
                f"Content-Type: image/png\r\n\r\n"
            ).encode()
            + photo
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(
            f"{base}/v1/photos",
            data=body,
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Authorization": f"Bearer {KEYS[1]}",
            },
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert answer == post_photos(client, ("astronaut.png", photo, "image/png")).json()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/v1/model", timeout=60)
        assert refused.value.code == 401
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=60)
    # uvicorn stops gracefully, then ends by the signal it was sent; the jobs' folder is gone.
    assert server.returncode == -signal.SIGTERM and "Application shutdown complete." in output, output
    assert KEYS[1] not in output and "Traceback" not in output


# --- Property-based: schemathesis against the service's own schema ------------------------


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case):
    # Schema-valid bodies are random bytes, rightly refused as unreadable photos and videos.
    case.call_and_validate(excluded_checks=[checks.positive_data_acceptance])


def test_photos_take_the_face_finder_as_a_query_parameter(client):
    upload = ("turned.png", encode_png(samples.turned_astronaut(30)), "image/png")

    found = {
        detector: post_photos(client, upload, query=f"?detector={detector}").json()
        for detector in ("blazeface", "haar")
    }
    default = post_photos(client, upload).json()

    assert default == found["blazeface"]
    ((blazeface,), (haar,)) = found["blazeface"]["results"], found["haar"]["results"]
    assert (blazeface["detector"], len(blazeface["faces"])) == ("blazeface", 1)
    assert (haar["detector"], haar["faces"]) == ("haar", [])  # upright faces only
    assert post_photos(client, upload, query="?detector=dlib").status_code == 422


def test_an_annotated_answer_decodes_the_upload_once(client, monkeypatch, astronaut_rgb):
    from emotion import pipeline

    decoded, load_image = [], pipeline.load_image
    monkeypatch.setattr(pipeline, "load_image", lambda *args: decoded.append(1) or load_image(*args))
    response = post_photos(
        client, ("astronaut.jpg", jpeg(astronaut_rgb), "image/jpeg"), query="?annotated=true"
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert len(decoded) == 1
