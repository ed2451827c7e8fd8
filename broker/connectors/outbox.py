"""The durable outbox: messages to ticket systems, delivered in order per ticket, retried.

:func:`enqueue` adds a row in the caller's transaction (so a message exists exactly when
the change it reports committed). :func:`deliver_due` is the worker the background loop
runs: for each ticket with a due message it claims the ticket's *oldest* undelivered row
(a compare-and-set lease, so several broker replicas never deliver the same ticket at
once), delivers it outside any transaction, and records the outcome. A failure backs off
exponentially (5 s, 10 s, 20 s ... capped at 15 min) and blocks the later messages of that
ticket until it succeeds, which is what keeps the order. Nothing is ever dropped: a message
is retried until its receiver answers 2xx. A message that an earlier try may have delivered
(the try failed, or the worker died holding its lease) is handed to the connector as a
``retry``: a desk that can be read back is asked first whether the comment's marker is
already there, so a crash never shows a comment twice; elsewhere delivery is at-least-once
and receivers dedupe on ``delivery_id``. The lease lasts the system's
``delivery_lease_seconds``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.connectors import texts
from broker.connectors.base import OutboundMessage
from broker.connectors.models import OutboxMessage
from broker.connectors.registry import ConnectorRegistry, registry_for
from broker.db.base import utcnow
from broker.errors import BrokerError
from broker.evidence import digest
from broker.tickets.models import Ticket

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
    marker: str | None = None,
) -> OutboxMessage | None:
    """Add a message; None when ``marker``'s step is queued for the ticket already."""
    if marker is not None and await _marked(db, system, external_id, marker):
        return None
    row = OutboxMessage(
        system=system,
        external_id=external_id,
        event_type=event_type,
        text=text,
        data=dict(data or {}),
        next_attempt_at=utcnow(),
        marker=marker,
    )
    try:
        async with db.begin_nested():  # a concurrent copy of the same step loses cleanly
            db.add(row)
            await db.flush()
    except IntegrityError:
        return None
    return row


async def _marked(db: AsyncSession, system: str, external_id: str, marker: str) -> bool:
    found = await db.scalar(
        select(OutboxMessage.id).where(
            OutboxMessage.system == system,
            OutboxMessage.external_id == external_id,
            OutboxMessage.marker == marker,
        )
    )
    return found is not None


async def count_markers(db: AsyncSession, ticket: Ticket, stem: str) -> int:
    """How many of the ticket's messages have a marker starting with ``stem``."""
    escaped = stem.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    count = await db.scalar(
        select(func.count()).where(
            OutboxMessage.system == ticket.system,
            OutboxMessage.external_id == ticket.external_id,
            OutboxMessage.marker.like(f"{escaped}%", escape="\\"),
        )
    )
    return int(count or 0)


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
    maker: async_sessionmaker[AsyncSession],
    system: str,
    external_id: str,
    lease: timedelta = timedelta(seconds=LEASE_SECONDS),
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
                .values(locked_until=now + lease)
                .execution_options(synchronize_session=False)
            ),
        )
        if claimed.rowcount != 1:
            return None
        # A lease that ran out without a settlement: the worker died mid-delivery.
        retry = head.attempts > 0 or head.locked_until is not None
        if head.event_type == "evidence.sealed":  # the digest is taken at delivery
            facts = await digest.complete(db, dict(head.data))
            if facts is not None:
                head.data = facts
                text = texts.evidence_text(
                    ticket_ref=str(facts.get("ticket", "")),
                    tree_size=facts["tree_size"],
                    root_hash=facts["root_hash"],
                    signed_at=datetime.fromisoformat(facts["signed_at"]),
                    key_fingerprint=facts.get("key_fingerprint"),
                    audit_page=facts.get("audit_page"),
                )
                head.text = texts.with_marker(text, head.marker) if head.marker else text
        return OutboundMessage(
            delivery_id=head.delivery_id,
            system=head.system,
            external_id=head.external_id,
            event_type=head.event_type,
            text=head.text,
            data=dict(head.data),
            created_at=head.created_at,
            marker=head.marker,
            retry=retry,
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
    seconds = getattr(getattr(registry.get(system), "config", None), "delivery_lease_seconds", None)
    lease = timedelta(seconds=float(seconds or LEASE_SECONDS))
    for _ in range(PER_TICKET_PER_RUN):
        message = await _claim_head(maker, system, external_id, lease)
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
