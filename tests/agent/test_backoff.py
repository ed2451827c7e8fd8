"""Reconnect back-off: exponential, capped, jittered into [ceiling/2, ceiling], reset on success."""

from __future__ import annotations

import pytest

from agent.runner import Backoff


@pytest.mark.parametrize(("initial", "maximum"), [(1.0, 60.0), (0.05, 0.2), (2.0, 3.0)])
def test_each_delay_lies_within_its_jitter_band(initial: float, maximum: float) -> None:
    backoff = Backoff(initial, maximum)
    for attempt in range(20):
        ceiling = min(maximum, initial * 2**attempt)
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling, (attempt, delay, ceiling)


def test_delays_grow_until_the_cap_and_stay_there() -> None:
    backoff = Backoff(1.0, 8.0)
    delays = [backoff.next_delay() for _ in range(12)]
    # The lower band edge doubles: 0.5, 1, 2, 4, then the cap's 4..8 from attempt 3 on.
    assert delays[0] <= 1.0
    assert delays[3] >= 4.0
    assert all(4.0 <= d <= 8.0 for d in delays[3:])


def test_jitter_spreads_agents_that_fail_together() -> None:
    # A thousand agents losing the broker at once must not all come back at the same moment.
    firsts = {round(Backoff(10.0, 60.0).next_delay(), 3) for _ in range(1000)}
    assert len(firsts) > 500
    assert min(firsts) >= 5.0
    assert max(firsts) <= 10.0


def test_reset_starts_over_from_the_initial_delay() -> None:
    backoff = Backoff(1.0, 60.0)
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1.0


def test_a_long_outage_keeps_the_cap_and_never_overflows() -> None:
    # Days of failed redials (thousands of attempts) still wait at most the cap, jittered.
    backoff = Backoff(1.0, 30.0)
    delays = [backoff.next_delay() for _ in range(5000)]
    assert all(15.0 <= d <= 30.0 for d in delays[5:])
    assert len({round(d, 3) for d in delays[-100:]}) > 50


def test_the_default_cap_brings_an_agent_back_within_30_seconds() -> None:
    from agent.config import AgentSettings

    settings = AgentSettings()
    backoff = Backoff(settings.backoff_initial, settings.backoff_max)
    assert max(backoff.next_delay() for _ in range(200)) <= 30.0
