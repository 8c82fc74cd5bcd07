"""The progress of a long job (a video's frames) as the page's bar and the command line draw it:
a few updates a second, each with the time left at the pace so far."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

PROGRESS_INTERVAL_S = 0.25  # between two updates: one per frame would flood a browser or a terminal


class Progress(NamedTuple):
    done: int
    total: int
    left_s: float  # at the pace so far

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


class ProgressPacer:
    """Called with (done, total) after every step of a job; returns a Progress when one is worth
    drawing (the first, the last, and one per interval_s between), else None."""

    def __init__(self, interval_s: float = PROGRESS_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self._interval_s = interval_s
        self._clock = clock
        self._started = clock()
        self._last: float | None = None

    def __call__(self, done: int, total: int) -> Progress | None:
        now = self._clock()
        if done < total and self._last is not None and now - self._last < self._interval_s:
            return None
        self._last = now
        left_s = (now - self._started) * (total - done) / done if done else 0.0
        return Progress(done, total, left_s)
