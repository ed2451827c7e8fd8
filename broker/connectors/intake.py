"""Taking an inbound notification: the desk's own authentication, freshness, replay; what is
refused is kept for the admin and changes nothing else.

:func:`receive` asks the system's connector to verify the delivery (its desk's signature or
credentials, a fresh timestamp where the desk sends one) and remembers what a replay would
repeat (the delivery id, or the signature of a signed body) for as long as the event says.
Every refusal is answered with a 4xx carrying ``{"error", "detail"}``, sealed as
``connector.webhook_rejected`` and kept in ``connector_webhook_rejects`` (headers with their
credentials and signatures redacted, the body as received, at most ``rejects_kept`` per
system); the transaction commits only that. Systems that are not configured keep nothing
(anybody can POST to any name): their refusals are only audited.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.connectors import inbound
from broker.connectors.base import WebhookEvent
from broker.connectors.models import WebhookReject
from broker.connectors.registry import registry_for
from broker.connectors.repository import WebhookDeliveryRepository
from broker.db.base import utcnow
from broker.errors import BrokerError, Conflict, NotAuthenticated, ValidationFailed
from broker.evidence.events import EventType
from broker.evidence.service import Actor, record_event

log = structlog.get_logger("broker.connectors")
BODY_KEPT = 65536  # characters of a refused body kept for the admin
STATUS = {NotAuthenticated: 401, ValidationFailed: 422, Conflict: 409}


def system_actor(system: str) -> Actor:
    return Actor(kind="ticket_system", name=system)


async def receive(
    db: AsyncSession, system: str, headers: Mapping[str, str], body: bytes
) -> WebhookEvent:
    """The verified event of a delivery, or a refusal that is kept (and raised)."""
    registry = registry_for(db)
    connector = registry.get(system)
    try:
        event = connector.verify_webhook(headers, body)
        config = getattr(connector, "config", None)
        window = int(getattr(config, "replay_window_seconds", 300))
        if event.delivery_id is not None:
            await _remember(db, system, event, window)
    except (NotAuthenticated, ValidationFailed, Conflict) as exc:
        kept = registry.is_configured(system)
        await _refused(db, system, exc, headers, body, connector, keep=kept)
        raise type(exc)(exc.detail, keep_changes=True) from exc
    return event


async def _remember(db: AsyncSession, system: str, event: WebhookEvent, window: int) -> None:
    assert event.delivery_id is not None
    deliveries = WebhookDeliveryRepository(db)
    now = utcnow()
    await deliveries.forget_before(now, default_age=timedelta(seconds=2 * window))
    keep = now + (event.remember_for or timedelta(seconds=2 * window))
    if not await deliveries.remember(system, event.delivery_id[:200], now, keep_until=keep):
        raise Conflict(f"webhook delivery {event.delivery_id[:80]!r} was already received")


async def _refused(
    db: AsyncSession,
    system: str,
    exc: BrokerError,
    headers: Mapping[str, str],
    body: bytes,
    connector: Any,
    *,
    keep: bool,
) -> None:
    status = STATUS.get(type(exc), 400)
    await record_event(
        db,
        EventType.connector_webhook_rejected,
        ticket=None,
        actor=system_actor(system),
        data={"system": system, "status": status, "why": exc.detail[:500]},
    )
    log.warning("connectors.webhook_refused", system=system, status=status, why=exc.detail)
    config = getattr(connector, "config", None)
    limit = int(getattr(config, "rejects_kept", 0)) if keep else 0
    if limit <= 0:
        return
    extra = getattr(config, "webhook_header", None)
    db.add(
        WebhookReject(
            system=system,
            received_at=utcnow(),
            status=status,
            error=exc.code,
            detail=exc.detail[:500],
            headers=inbound.redacted(headers, extra),
            body=body.decode("utf-8", errors="replace")[:BODY_KEPT],
            body_size=len(body),
            body_sha256=inbound.body_digest(body),
        )
    )
    await db.flush()
    await _prune(db, system, limit)


async def _prune(db: AsyncSession, system: str, limit: int) -> None:
    """Keep the newest ``limit`` refusals of ``system``."""
    cutoff = await db.scalar(
        select(WebhookReject.id)
        .where(WebhookReject.system == system)
        .order_by(WebhookReject.id.desc())
        .offset(limit)
        .limit(1)
    )
    if cutoff is not None:
        await db.execute(
            delete(WebhookReject).where(WebhookReject.system == system, WebhookReject.id <= cutoff)
        )


async def rejected(db: AsyncSession, system: str | None, *, limit: int) -> list[WebhookReject]:
    """The refused deliveries kept, newest first (one system, or all)."""
    stmt = select(WebhookReject).order_by(WebhookReject.id.desc()).limit(limit)
    if system is not None:
        stmt = stmt.where(WebhookReject.system == system)
    return list((await db.scalars(stmt)).all())
