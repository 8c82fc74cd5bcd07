"""The pace of progress updates and the time left, on a clock the test moves."""

from __future__ import annotations

import pytest

from emotion.progress import PROGRESS_INTERVAL_S, Progress, ProgressPacer
from tests.conftest import Clock


def test_the_first_update_an_update_per_interval_and_the_last_are_drawn():
    clock = Clock()
    pace = ProgressPacer(clock=clock)
    clock.now += 1.0
    assert pace(10, 100) == Progress(10, 100, pytest.approx(9.0))  # 1 s for 10 frames: 9 s for 90
    clock.now += PROGRESS_INTERVAL_S / 2
    assert pace(11, 100) is None
    clock.now += PROGRESS_INTERVAL_S
    assert pace(20, 100).done == 20
    assert pace(100, 100) == Progress(100, 100, 0.0)  # however soon: the job is done


def test_the_fraction_stays_within_the_bar():
    assert Progress(0, 0, 0.0).fraction == 0.0
    assert Progress(5, 4, 0.0).fraction == 1.0  # a container that undercounted its frames
    assert Progress(1, 4, 3.0).fraction == 0.25
