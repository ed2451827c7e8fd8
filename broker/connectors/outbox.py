"""The durable outbox: messages to ticket systems, delivered in order per ticket, retried.

:func:`enqueue` adds a row in the caller's transaction (so a message exists exactly when
the change it reports committed). :func:`deliver_due` is the worker the background loop
runs: for each ticket with a due message it claims the ticket's *oldest* undelivered row
(a compare-and-set lease, so several broker replicas never deliver the same ticket at
once), delivers it outside any transaction, and records the outcome. A failure backs off
exponentially (5 s, 10 s, 20 s ... capped at 15 min) and blocks the later messages of that
ticket until it succeeds, which is what keeps the order. Nothing is ever dropped: a message
is retried until its receiver answers 2xx. Delivery is at-least-once; receivers dedupe on
``delivery_id``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.connectors.base import OutboundMessage
from broker.connectors.models import OutboxMessage
from broker.connectors.registry import ConnectorRegistry, registry_for
from broker.db.base import utcnow
from broker.errors import BrokerError

log = structlog.get_logger("broker.connectors.outbox")

BACKOFF_BASE_SECONDS = 5.0
BACKOFF_CAP_SECONDS = 900.0
LEASE_SECONDS = 120.0
TICKETS_PER_RUN = 100
PER_TICKET_PER_RUN = 50


def backoff(attempts: int) -> timedelta:
    """Delay before the next try after ``attempts`` failed tries."""
    exponent = max(0, min(attempts - 1, 20))
    return timedelta(seconds=min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**exponent))


async def enqueue(
    db: AsyncSession,
    *,
    system: str,
    external_id: str,
    event_type: str,
    text: str,
    data: dict[str, Any] | None = None,
) -> OutboxMessage:
    row = OutboxMessage(
        system=system,
        external_id=external_id,
        event_type=event_type,
        text=text,
        data=dict(data or {}),
        next_attempt_at=utcnow(),
    )
    db.add(row)
    await db.flush()
    return row


def _free(now: datetime) -> Any:
    return or_(OutboxMessage.locked_until.is_(None), OutboxMessage.locked_until < now)


async def _due_tickets(db: AsyncSession, now: datetime) -> list[tuple[str, str]]:
    heads = (
        select(func.min(OutboxMessage.id))
        .where(OutboxMessage.delivered_at.is_(None))
        .group_by(OutboxMessage.system, OutboxMessage.external_id)
        .scalar_subquery()
    )
    stmt = (
        select(OutboxMessage.system, OutboxMessage.external_id)
        .where(
            OutboxMessage.id.in_(heads),
            OutboxMessage.next_attempt_at <= now,
            _free(now),
        )
        .order_by(OutboxMessage.id)
        .limit(TICKETS_PER_RUN)
    )
    return [(system, external_id) for system, external_id in (await db.execute(stmt)).all()]


async def _claim_head(
    maker: async_sessionmaker[AsyncSession], system: str, external_id: str
) -> OutboundMessage | None:
    """Lease the ticket's oldest undelivered message if it is due and nobody holds it."""
    now = utcnow()
    async with maker() as db, db.begin():
        head = await db.scalar(
            select(OutboxMessage)
            .where(
                OutboxMessage.system == system,
                OutboxMessage.external_id == external_id,
                OutboxMessage.delivered_at.is_(None),
            )
            .order_by(OutboxMessage.id)
            .limit(1)
        )
        if head is None or head.next_attempt_at > now:
            return None
        claimed = cast(
            CursorResult[Any],
            await db.execute(
                update(OutboxMessage)
                .where(
                    and_(
                        OutboxMessage.id == head.id,
                        # Unchanged since we read it: another worker may have delivered
                        # it (and released the lease) in between.
                        OutboxMessage.delivered_at.is_(None),
                        OutboxMessage.attempts == head.attempts,
                        _free(now),
                    )
                )
                .values(locked_until=now + timedelta(seconds=LEASE_SECONDS))
                .execution_options(synchronize_session=False)
            ),
        )
        if claimed.rowcount != 1:
            return None
        return OutboundMessage(
            delivery_id=head.delivery_id,
            system=head.system,
            external_id=head.external_id,
            event_type=head.event_type,
            text=head.text,
            data=dict(head.data),
            created_at=head.created_at,
        )


async def _settle(
    maker: async_sessionmaker[AsyncSession], message: OutboundMessage, error: str | None
) -> None:
    now = utcnow()
    async with maker() as db, db.begin():
        row = await db.scalar(
            select(OutboxMessage).where(OutboxMessage.delivery_id == message.delivery_id)
        )
        if row is None:  # pragma: no cover - rows are never deleted while leased
            return
        row.attempts += 1
        row.locked_until = None
        if error is None:
            row.delivered_at = now
            row.last_error = None
        else:
            row.next_attempt_at = now + backoff(row.attempts)
            row.last_error = error[:500]


async def _drain(
    maker: async_sessionmaker[AsyncSession],
    registry: ConnectorRegistry,
    system: str,
    external_id: str,
) -> int:
    delivered = 0
    for _ in range(PER_TICKET_PER_RUN):
        message = await _claim_head(maker, system, external_id)
        if message is None:
            break
        error: str | None = None
        try:
            await registry.get(system).deliver(message)
        except BrokerError as exc:  # recorded on the row and retried with back-off
            error = exc.detail
        await _settle(maker, message, error)
        if error is not None:
            log.warning(
                "connectors.delivery_failed",
                system=system,
                ticket=f"{system}:{external_id}",
                event_type=message.event_type,
                error=error,
            )
            break
        delivered += 1
    return delivered


async def deliver_due(db_factory: async_sessionmaker[AsyncSession]) -> int:
    """Deliver what is due; returns how many messages were delivered. Safe to run anywhere."""
    async with db_factory() as db:
        registry = registry_for(db)
        async with db.begin():
            tickets = await _due_tickets(db, utcnow())
    delivered = 0
    for system, external_id in tickets:
        delivered += await _drain(db_factory, registry, system, external_id)
    if delivered:
        log.info("connectors.delivered", count=delivered)
    return delivered


async def pending_count(db: AsyncSession, system: str | None = None) -> int:
    stmt = select(func.count()).where(OutboxMessage.delivered_at.is_(None))
    if system is not None:
        stmt = stmt.where(OutboxMessage.system == system)
    return int(await db.scalar(stmt) or 0)
