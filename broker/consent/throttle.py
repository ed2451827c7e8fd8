"""Per-client brute-force protection for consent codes, shared by replicas via the database.

The first ``consent_max_attempts`` wrong codes from a client are free; each further one makes
the client wait, ``consent_backoff_seconds`` at first and twice as long after every wrong
code (see :mod:`broker.backoff`). While a client waits every attempt is refused with 429 and
``Retry-After`` before the code is looked at, so a right guess then teaches nothing; the
refusal is tallied (:mod:`broker.evidence.refusals`), not recorded one by one. The count
starts afresh once the client has been quiet for ``consent_lockout_seconds``. Nothing here
sleeps: a wait is the client's, never a held database lock. The counters are rows locked for
the transaction, so concurrent wrong guesses from one client are all counted.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from broker.backoff import retry_after_seconds, wait_after
from broker.consent.models import ConsentClientThrottle
from broker.consent.repository import ThrottleRepository
from broker.context import settings_of
from broker.errors import RateLimited
from broker.evidence import refusals
from broker.evidence.events import EventType
from broker.evidence.service import Actor, record_event


async def refuse(db: AsyncSession, ip: str, until: datetime, now: datetime, why: str) -> None:
    """Tally a refused attempt and refuse it (429, ``Retry-After``; the tally is kept)."""
    await refusals.tally(db, refusals.CONSENT_CODE, ip, now)
    seconds = retry_after_seconds(until, now)
    raise RateLimited(
        f"{why}; try again in {seconds} second(s)", retry_after=seconds, keep_changes=True
    )


async def gate(db: AsyncSession, client_key: str, now: datetime) -> ConsentClientThrottle:
    """The client's counter row; refuses (RateLimited) while the client waits."""
    row = await ThrottleRepository(db).locked_row(client_key[:64], now)
    if row.locked_until is not None and row.locked_until > now:
        await refuse(
            db, client_key, row.locked_until, now, "too many wrong codes from this address"
        )
    return row


async def charge(db: AsyncSession, row: ConsentClientThrottle, now: datetime, *, ip: str) -> int:
    """Count one wrong code; make the client wait once past the free tries. Returns the count."""
    settings = settings_of(db)
    if now - row.window_started_at >= timedelta(seconds=settings.consent_lockout_seconds):
        # Quiet for long enough: count afresh.
        row.failures = 0
        row.locked_until = None
    row.failures += 1
    row.window_started_at = now
    failures = row.failures
    wait = wait_after(
        failures,
        free=settings.consent_max_attempts,
        base=timedelta(seconds=settings.consent_backoff_seconds),
    )
    if wait:
        row.locked_until = now + wait
        await record_event(
            db,
            EventType.consent_lockout,
            ticket=None,
            actor=Actor(kind="end_user", ip=ip),
            data={
                "scope": "client",
                "failures": failures,
                "locked_until": row.locked_until.isoformat(),
            },
        )
    await db.flush()
    return failures
