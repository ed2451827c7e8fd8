"""Per-client brute-force protection for consent codes, shared by replicas via the database.

After ``consent_max_attempts`` wrong codes within ``consent_lockout_seconds`` a client is
locked out for ``consent_lockout_seconds``; while locked, every attempt is refused before
the code is checked. The counters are rows locked for the transaction, so concurrent wrong
guesses from one client are all counted.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from broker.consent.models import ConsentClientThrottle
from broker.consent.repository import ThrottleRepository
from broker.context import settings_of
from broker.errors import RateLimited
from broker.evidence.events import EventType
from broker.evidence.service import Actor, record_event


async def gate(db: AsyncSession, client_key: str, now: datetime) -> ConsentClientThrottle:
    """The client's counter row; raises RateLimited while the client is locked out."""
    row = await ThrottleRepository(db).locked_row(client_key[:64], now)
    if row.locked_until is not None and row.locked_until > now:
        minutes = math.ceil((row.locked_until - now).total_seconds() / 60)
        raise RateLimited(
            f"too many wrong codes from this address; try again in {minutes} minute(s)"
        )
    return row


async def charge(db: AsyncSession, row: ConsentClientThrottle, now: datetime, *, ip: str) -> int:
    """Count one wrong code; lock the client when the limit is reached. Returns the count."""
    settings = settings_of(db)
    window = timedelta(seconds=settings.consent_lockout_seconds)
    if row.locked_until is not None or now - row.window_started_at >= window:
        # A finished lockout or an old window: start counting afresh.
        row.failures = 0
        row.window_started_at = now
        row.locked_until = None
    row.failures += 1
    failures = row.failures
    if failures >= settings.consent_max_attempts:
        row.locked_until = now + window
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
