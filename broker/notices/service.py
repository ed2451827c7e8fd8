"""Owner notices: queued with the change they report, delivered by the background loop.

:func:`enqueue` adds a row in the caller's transaction (the one that ended the session), so
a notice is owed exactly when the end committed. :func:`deliver_due` is the background job:
it claims each due row with a compare-and-set lease (replicas never send the same notice at
once), sends it outside any transaction and records the outcome. A refused or unreachable
mail server backs off (5 s doubling, at most an hour) and the row is tried again until it is
taken, so a server that is down loses nothing; a worker that dies holding a lease leaves the
row to be sent again once the lease lapses (at-least-once). A sent notice is sealed as
``owner.notified`` in the ticket's stream, with the transport that took it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.db.aftercommit import transaction
from broker.db.base import utcnow
from broker.evidence.events import EventType
from broker.evidence.service import SYSTEM_ACTOR, record_event
from broker.notices.mailer import Mail, Mailer, MailError
from broker.notices.models import OwnerNotice

log = structlog.get_logger("broker.notices")

BACKOFF_BASE = timedelta(seconds=5)
BACKOFF_CAP = timedelta(hours=1)
LEASE = timedelta(minutes=2)
PER_RUN = 50


def backoff(attempts: int) -> timedelta:
    """Wait before the next try after ``attempts`` failed tries."""
    exponent: int = max(0, min(attempts - 1, 20))
    return min(BACKOFF_CAP, BACKOFF_BASE * (1 << exponent))


async def enqueue(db: AsyncSession, *, session_id: str, ticket_ref: str, mail: Mail) -> OwnerNotice:
    """Owe ``mail`` to the device owner, in the caller's transaction."""
    notice = OwnerNotice(
        session_id=session_id,
        ticket_ref=ticket_ref,
        recipient=mail.recipient,
        subject=mail.subject[:300],
        body=mail.body,
        attempts=0,
        next_attempt_at=utcnow(),
    )
    db.add(notice)
    await db.flush()
    return notice


async def pending(db: AsyncSession, session_id: str) -> list[OwnerNotice]:
    """The session's notices, oldest first (the admin's and the tests' view)."""
    stmt = (
        select(OwnerNotice)
        .where(OwnerNotice.session_id == session_id)
        .order_by(OwnerNotice.created_at, OwnerNotice.id)
    )
    return list((await db.scalars(stmt)).all())


async def forget_notices(db: AsyncSession, session_ids: list[str]) -> int:
    """Erasure: the sessions' notices go, sent or not (they repeat the ticket's subject, the
    reason and names); how many."""
    if not session_ids:
        return 0
    result = await db.execute(delete(OwnerNotice).where(OwnerNotice.session_id.in_(session_ids)))
    return int(getattr(result, "rowcount", 0) or 0)


def _due(now: datetime) -> Any:
    return and_(
        OwnerNotice.sent_at.is_(None),
        OwnerNotice.next_attempt_at <= now,
        or_(OwnerNotice.lease_until.is_(None), OwnerNotice.lease_until < now),
    )


async def _claim(db: AsyncSession, notice_id: str, now: datetime) -> Mail | None:
    stmt = (
        update(OwnerNotice)
        .where(OwnerNotice.id == notice_id, _due(now))
        .values(lease_until=now + LEASE)
    )
    result = cast(CursorResult[Any], await db.execute(stmt))
    if result.rowcount != 1:
        return None  # another replica took it, or it was sent meanwhile
    row = await db.get(OwnerNotice, notice_id)
    assert row is not None
    return Mail(recipient=row.recipient, subject=row.subject, body=row.body)


async def deliver_due(maker: async_sessionmaker[AsyncSession], mailer: Mailer) -> int:
    """Send every due notice once; returns how many the transport took."""
    now = utcnow()
    async with transaction(maker) as db:
        stmt = select(OwnerNotice.id).where(_due(now)).order_by(OwnerNotice.next_attempt_at)
        ids = list((await db.scalars(stmt.limit(PER_RUN))).all())
    sent = 0
    for notice_id in ids:
        async with transaction(maker) as db:
            mail = await _claim(db, notice_id, now)
        if mail is None:
            continue
        try:
            await mailer.send(mail)
        except MailError as exc:
            async with transaction(maker) as db:
                row = await db.get(OwnerNotice, notice_id)
                assert row is not None
                row.attempts += 1
                row.next_attempt_at = utcnow() + backoff(row.attempts)
                row.lease_until = None
                row.last_error = exc.detail[:500]
            log.warning("notices.send_failed", notice_id=notice_id, error=exc.detail)
            continue
        async with transaction(maker) as db:
            row = await db.get(OwnerNotice, notice_id)
            assert row is not None
            row.sent_at = utcnow()
            row.lease_until = None
            row.attempts += 1
            await record_event(
                db,
                EventType.owner_notified,
                ticket=row.ticket_ref,
                actor=SYSTEM_ACTOR,
                data={
                    "session_id": row.session_id,
                    "notice_id": row.id,
                    "recipient": row.recipient,
                    "transport": mailer.transport,
                    "attempts": row.attempts,
                },
            )
        sent += 1
    return sent
