"""Video jobs for the HTTP API: a bounded queue, one job at a time per worker, results that expire.

`submit` copies an uploaded video into the job's own folder, inside a temporary folder, checks
it (`probe_video`, at most PROBE_SLOTS at once: a probe runs in the request's thread, outside
the workers) and queues it. A worker thread (one per core: a job keeps about one core
busy) annotates it with `process_video`, leaves its ResultFile(s) beside it and deletes the
upload. Results are
kept `result_ttl_s` after the job finished or failed, then removed; `close` removes them all.
Deleting a job removes its folder and frees its place in the queue at once; a running job stops
at its next frame. Finished jobs kept are bounded: at most `max_kept_per_owner` per owner (an API
key, or a client's address), whose next video is refused until one is deleted or expires, and
`max_kept` in all, beyond which the oldest finished job is removed early. `on_result`, when
given, is told each finished job's result (the HTTP API logs its detections with it).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, Literal

from emotion.live import LiveSettings
from emotion.tracking import Classifier
from emotion.video import InvalidVideo, VideoResult, probe_video, process_video

logger = logging.getLogger(__name__)

WORKERS = os.cpu_count() or 1  # one job at a time per core
PURGE_INTERVAL_S = 30.0  # an idle worker removes expired results this often
UPLOAD_FILE = "upload"  # the video as uploaded, deleted once analysed
MAX_KEPT = 64  # finished jobs whose results are kept, all owners together: each up to the upload limit
MAX_KEPT_PER_OWNER = 16  # finished jobs kept per owner: one client cannot fill MAX_KEPT alone
PROBE_SLOTS = 2  # uploads probed at once (each decodes a few frames of up to 4K); the others wait
# A job's pace before it has one of its own: real time at 30 fps, slower than the README's Speed
# table measures for videos, so that a client told when to come back comes late, not early.
ASSUMED_FRAMES_PER_S = 30.0
MIN_RETRY_AFTER_S, MAX_RETRY_AFTER_S = 5, 3600  # what retry_after_s answers stays within these

Status = Literal["queued", "running", "done", "failed"]
# (the upload's file name, the job's settings, its result, when its analysis began in UTC seconds)
ResultHook = Callable[[str, LiveSettings, VideoResult, float], None]


class ResultFile(StrEnum):
    """The files a finished job leaves in its folder."""

    VIDEO = "annotated.mp4"  # the annotated video, H.264
    CSV = "faces.csv"  # one row per frame and face


class QueueFull(RuntimeError):
    """Every place in the queue is taken."""


class TooManyKept(RuntimeError):
    """The owner already has MAX_KEPT_PER_OWNER finished jobs kept."""


class JobNotFound(LookupError):
    """No such job: it never existed, was deleted or has expired."""


class JobNotDone(RuntimeError):
    """The job has no results (yet): it is queued, running or has failed."""


class _Deleted(Exception):
    """Raised by a deleted job's progress callback to stop its analysis."""


@dataclass(frozen=True)
class Job:
    """A job as its owner sees it."""

    id: str
    status: Status
    frames_done: int
    frames_total: int  # to be analysed (every step-th one of a fast video); an estimate until it ends
    error: str | None  # why it failed, for people
    expires_in_s: float | None  # until its results are removed; None while it has not finished


@dataclass
class _Job:
    id: str
    folder: Path
    name: str  # the file name the video was uploaded with
    owner: str  # who submitted it: an API key's digest or a client's address
    settings: LiveSettings  # how process_video searches, tracks and smooths faces
    frames_total: int
    frames_done: int = 0
    status: Status = "queued"
    error: str | None = None
    started_at: float | None = None  # time.monotonic(), when a worker took it
    finished_at: float | None = None  # time.monotonic()
    deleted: bool = False


class VideoJobs:
    """The queue and its workers. Thread-safe; `start` the workers, `close` when done."""

    def __init__(
        self,
        classifier: Classifier,
        *,
        capacity: int,
        result_ttl_s: float,
        workers: int = WORKERS,
        on_result: ResultHook | None = None,
        max_kept: int = MAX_KEPT,
        max_kept_per_owner: int = MAX_KEPT_PER_OWNER,
    ):
        """capacity: jobs that may wait (beyond the running ones); result_ttl_s: how long results are kept."""
        self.classifier = classifier
        self._on_result = on_result
        self.result_ttl_s = result_ttl_s
        self.capacity = capacity
        self.max_kept, self.max_kept_per_owner = max_kept, max_kept_per_owner
        self.folder = Path(tempfile.mkdtemp(prefix="emotion-video-jobs-"))
        # Unbounded: the jobs waiting are counted in _jobs, where a deleted one stops counting at
        # once; the workers skip deleted jobs when they reach them.
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._work, name=f"video-job-{number}", daemon=True)
            for number in range(workers)
        ]
        self._started = False
        self._probe_slots = threading.BoundedSemaphore(PROBE_SLOTS)

    def start(self) -> None:
        for worker in self._workers:
            worker.start()
        self._started = True

    def close(self) -> None:
        """Stop the workers (a running job at its next frame) and remove every job's files."""
        with self._lock:
            for job in self._jobs.values():
                job.deleted = True
            self._jobs.clear()
        if self._started:
            for _ in self._workers:
                self._queue.put(None)  # the workers skip the deleted jobs still queued before it
            for worker in self._workers:
                worker.join()
        shutil.rmtree(self.folder, ignore_errors=True)

    def full(self) -> bool:
        with self._lock:
            return self._waiting() >= self.capacity

    def counts(self) -> dict[Status, int]:
        """How many jobs are in each state."""
        counts: dict[Status, int] = {"queued": 0, "running": 0, "done": 0, "failed": 0}
        with self._lock:
            for job in self._jobs.values():
                counts[job.status] += 1
        return counts

    def submit(self, video: BinaryIO, *, settings: LiveSettings, name: str = "", owner: str = "") -> Job:
        """Check an uploaded video (an open file, read from its start) and queue a copy for `owner`.

        Raises QueueFull, TooManyKept, or InvalidVideo for a file process_video would refuse.
        """
        self.purge()
        with self._lock:
            self._check_room(owner)  # before copying a large file for nothing
        job_id = secrets.token_hex(16)  # 128 random bits: not guessable
        with self._probe_slots:
            frames_total = probe_video(video).analysed_frames
        job = _Job(job_id, self.folder / job_id, name, owner, settings, frames_total)
        job.folder.mkdir()
        try:
            video.seek(0)
            with open(job.folder / UPLOAD_FILE, "wb") as file:
                shutil.copyfileobj(video, file)
            with self._lock:
                self._check_room(owner)  # again: others may have submitted meanwhile
                self._jobs[job.id] = job
                self._queue.put(job)
                return self._view(job)
        except BaseException:
            shutil.rmtree(job.folder, ignore_errors=True)
            raise

    def retry_after_s(self) -> int:
        """Seconds until a place in the full queue should free: when the running job nearest its
        end is done, at its pace so far (ASSUMED_FRAMES_PER_S before it has one), or, with none
        running, when the first waiting one would be."""
        now = time.monotonic()
        with self._lock:
            running = [job for job in self._jobs.values() if job.status == "running"]
            waiting = [job for job in self._jobs.values() if job.status == "queued"]
            lefts = [self._left_s(job, now) for job in running] or [
                self._left_s(job, now) for job in waiting[:1]
            ]
        return int(min(max(math.ceil(min(lefts, default=0)), MIN_RETRY_AFTER_S), MAX_RETRY_AFTER_S))

    @staticmethod
    def _left_s(job: _Job, now: float) -> float:
        pace = ASSUMED_FRAMES_PER_S
        if job.started_at is not None and job.frames_done and now > job.started_at:
            pace = job.frames_done / (now - job.started_at)
        return max(0, job.frames_total - job.frames_done) / pace

    def _check_room(self, owner: str) -> None:
        """Raises QueueFull or TooManyKept; the caller holds the lock."""
        if self._waiting() >= self.capacity:
            raise QueueFull("the queue is full")
        kept = sum(1 for job in self._jobs.values() if job.owner == owner and job.finished_at is not None)
        if kept >= self.max_kept_per_owner:
            raise TooManyKept(f"{kept} finished jobs are kept for this client")

    def _waiting(self) -> int:
        return sum(1 for job in self._jobs.values() if job.status == "queued")

    def get(self, job_id: str) -> Job:
        self.purge()
        with self._lock:
            return self._view(self._find(job_id))

    def open_result(self, job_id: str, name: ResultFile) -> BinaryIO:
        """A finished job's result file, opened for reading; raises JobNotFound, JobNotDone."""
        self.purge()
        with self._lock:
            job = self._find(job_id)
            if job.status != "done":
                raise JobNotDone(job.status)
            # Once open, the file can be read to its end even if the job is deleted meanwhile.
            return open(job.folder / name, "rb")

    def delete(self, job_id: str) -> None:
        with self._lock:
            job = self._find(job_id)
            del self._jobs[job_id]
            job.deleted = True
            if job.status != "running":  # a running job's worker removes the folder when it stops
                shutil.rmtree(job.folder, ignore_errors=True)

    def purge(self) -> None:
        """Remove the jobs whose results have expired."""
        now = time.monotonic()
        with self._lock:
            for job in list(self._jobs.values()):
                if job.finished_at is not None and now - job.finished_at >= self.result_ttl_s:
                    del self._jobs[job.id]
                    shutil.rmtree(job.folder, ignore_errors=True)

    def _find(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def _view(self, job: _Job) -> Job:
        expires_in_s = None
        if job.finished_at is not None:
            expires_in_s = max(0.0, job.finished_at + self.result_ttl_s - time.monotonic())
        return Job(job.id, job.status, job.frames_done, job.frames_total, job.error, expires_in_s)

    def _work(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=PURGE_INTERVAL_S)
            except queue.Empty:
                self.purge()
                continue
            if job is None:
                return
            self._run(job)

    def _run(self, job: _Job) -> None:
        with self._lock:
            if job.deleted:
                return
            job.status = "running"
            job.started_at = time.monotonic()

        def progress(done: int, total: int) -> None:
            if job.deleted:
                raise _Deleted
            with self._lock:
                job.frames_done, job.frames_total = done, total

        error = None
        started_utc = time.time()
        try:
            result = process_video(
                job.folder / UPLOAD_FILE, self.classifier, settings=job.settings, progress=progress
            )
            (job.folder / ResultFile.VIDEO).write_bytes(result.video)
            (job.folder / ResultFile.CSV).write_text(result.to_csv())
            if self._on_result is not None:
                self._on_result(job.name, job.settings, result, started_utc)
        except _Deleted:
            error = "deleted"
        except InvalidVideo as invalid:
            error = str(invalid)
        except Exception:  # the job fails, the service and the other jobs go on
            logger.exception("Video job %s failed", job.id)
            error = "The video could not be analysed because of an error in the service."
        (job.folder / UPLOAD_FILE).unlink(missing_ok=True)
        with self._lock:
            job.status = "done" if error is None else "failed"
            job.error = error
            job.finished_at = time.monotonic()
            if job.deleted:
                shutil.rmtree(job.folder, ignore_errors=True)
            finished = sorted(
                (job for job in self._jobs.values() if job.finished_at is not None),
                key=lambda job: job.finished_at,
            )
            for oldest in finished[: max(0, len(finished) - self.max_kept)]:
                del self._jobs[oldest.id]
                shutil.rmtree(oldest.folder, ignore_errors=True)
