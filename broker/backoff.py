"""Growing back-off for guessing throttles: a few free tries, then waits that double.

Refusing with a wait (HTTP 429 + ``Retry-After``) instead of locking for good keeps the
owner of a secret able to get in while an attacker's rate falls off exponentially: with
``free`` tries and a first wait of ``base`` seconds, a secret that lives ``T`` seconds can be
tried at most ``free + log2(T / base) + 1`` times, whatever the number of source addresses.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

CAP = timedelta(days=1)  # a bound, so the doubling never overflows a datetime


def wait_after(failures: int, *, free: int, base: timedelta) -> timedelta:
    """How long to wait after the ``failures``-th consecutive wrong try (zero while free)."""
    if failures < free:
        return timedelta(0)
    doublings = min(failures - free, 32)
    wait: timedelta = base * (2**doublings)
    return min(wait, CAP)


def retry_after_seconds(until: datetime, now: datetime) -> int:
    """Whole seconds until ``until`` (at least 1): the value of a ``Retry-After`` header."""
    return max(1, math.ceil((until - now).total_seconds()))
