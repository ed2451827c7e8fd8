"""Stopping the segment workers (``feed_segments(..., stop=...)``): the parent looks at the
event while it waits for a segment and ends the workers; without a stop it just waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from audit.segments import feed_segments
from audit.verify import LogVerifier
from audit.workers import Stopped

from .test_segments import CHECKPOINTS, FRONTIER, LOG_ID, ROWS, SIGNER


def slow_fetch(start: int, count: int) -> Sequence[Any]:
    """Longer than the parent's poll interval, so it waits more than once per segment."""
    time.sleep(0.25)
    return ROWS[start : start + count]


def test_workers_slower_than_the_poll_are_waited_for() -> None:
    checker = LogVerifier(LOG_ID, SIGNER.verifier, CHECKPOINTS)
    feed_segments(checker, len(ROWS), slow_fetch, processes=2, segment=128, context="fork")
    assert checker.finish(FRONTIER.size, FRONTIER.root()).ok


def test_a_stop_ends_the_workers() -> None:
    checker = LogVerifier(LOG_ID, SIGNER.verifier, CHECKPOINTS)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped, match="stopped"):
        feed_segments(
            checker, len(ROWS), slow_fetch, processes=2, segment=128, context="fork", stop=stop
        )
    assert checker.frontier.size == 0
