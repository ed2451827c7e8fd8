"""Reconciliation: seal what a provider recorded about a session's device into the audit log.

Connections made through the session's access inside its window become
``provider.connection``; connections through it outside the window, and connections no
approved session accounts for, become ``provider.alert``. Every provider event is marked in
``provider_event_marks`` in the same transaction as its audit event, so it is sealed once; an
outage raises before anything is marked, and the next run seals what was missed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.db.aftercommit import transaction
from broker.db.base import utcnow
from broker.devices.models import Device
from broker.errors import BrokerError
from broker.evidence.events import EventType
from broker.evidence.service import record_event
from broker.providers import registry
from broker.providers.base import ProviderEvent, RemoteAccessProvider, SessionSpec, Window
from broker.providers.context import approved_window, provider_actor, session_context
from broker.providers.models import ProviderEventMark, ProviderSessionLink
from broker.sessions.models import RemoteSession
from broker.sessions.states import SessionState

log = structlog.get_logger("broker.providers")

# How far before the approved window reconciliation looks for connections on the device.
LOOKBACK = timedelta(minutes=15)
# While a session runs, what the provider recorded is read at most this often...
RECONCILE_EVERY = timedelta(minutes=1)
# ...and once more this long after the end, when the provider has written its log.
RECONCILE_SETTLE = timedelta(minutes=1)


async def reconcile(db: AsyncSession, session: RemoteSession) -> int:
    """Seal what the provider recorded on the session's device into the audit log.

    Connections made through this session's access inside its window become
    ``provider.connection``; connections through it outside the window, and connections no
    approved session accounts for, become ``provider.alert`` (closed when still running and
    the provider can). Each provider event is sealed once. Returns the events recorded.
    """
    ticket, spec, device_row, device, _ = await session_context(db, session)
    provider = registry.get(session.provider)
    now = utcnow()
    window = Window(spec.window.start - LOOKBACK, max(now, spec.window.start))
    events = await provider.collect(device, window)
    if not events:
        await _touch(db, session.id, now)
        return 0
    marks = {
        mark.event_key: mark
        for mark in (
            await db.scalars(
                select(ProviderEventMark).where(
                    ProviderEventMark.provider == provider.name,
                    ProviderEventMark.event_key.in_([e.key for e in events]),
                )
            )
        ).all()
    }
    others = await _other_specs(db, session, device_row)
    recorded = 0
    for event in events:
        mark = marks.get(event.key)
        if mark is not None:
            # Sealed as fine while the window was open, still running now that it is over.
            if (
                mark.verdict == "connection"
                and mark.session_id == session.id
                and event.active
                and now >= spec.window.end
            ):
                closed = await provider.terminate(event)
                data = {"session_id": session.id, "device_id": device_row.id}
                data.update(event.audit_data())
                alert = {**data, "alert": "outside_window", "closed": closed}
                actor = provider_actor(provider.name)
                await record_event(
                    db, EventType.provider_alert, ticket=ticket.ref, actor=actor, data=alert
                )
                mark.verdict = "outside_window"
                recorded += 1
            continue
        verdict, count = await _seal(
            db,
            provider,
            event,
            spec=spec,
            others=others,
            ticket_ref=ticket.ref,
            device_id=device_row.id,
            now=now,
        )
        if verdict is None:
            continue  # another session's connection: its own reconciliation seals it
        db.add(
            ProviderEventMark(
                provider=provider.name,
                event_key=event.key,
                device_id=device_row.id,
                session_id=session.id if verdict != "unapproved" else None,
                verdict=verdict,
            )
        )
        recorded += count
    await _touch(db, session.id, now)
    await db.flush()
    return recorded


async def _seal(
    db: AsyncSession,
    provider: RemoteAccessProvider,
    event: ProviderEvent,
    *,
    spec: SessionSpec,
    others: list[SessionSpec],
    ticket_ref: str,
    device_id: str,
    now: datetime,
) -> tuple[str | None, int]:
    """Record what ``event`` means; returns the verdict and how many audit events it took."""
    data: dict[str, Any] = {"session_id": spec.session_id, "device_id": device_id}
    data.update(event.audit_data())
    actor = provider_actor(provider.name)
    if provider.belongs_to(event, spec):
        await record_event(
            db, EventType.provider_connection, ticket=ticket_ref, actor=actor, data=data
        )
        await provider.annotate(event, f"{ticket_ref} · supportbroker session {spec.session_id}")
        running_late = event.active and now >= spec.window.end
        if spec.window.contains(_started(event)) and not running_late:
            return "connection", 1
        closed = await provider.terminate(event) if event.active else False
        alert = {**data, "alert": "outside_window", "closed": closed}
        await record_event(db, EventType.provider_alert, ticket=ticket_ref, actor=actor, data=alert)
        return "outside_window", 2
    if any(provider.belongs_to(event, other) for other in others):
        return None, 0
    closed = await provider.terminate(event) if event.active else False
    alert = {**data, "alert": "no_approved_request", "closed": closed}
    alert.pop("session_id")
    # Not this ticket's business: the alert goes to the system stream (auditors see it there).
    await record_event(db, EventType.provider_alert, ticket=None, actor=actor, data=alert)
    log.warning("provider.alert", provider=provider.name, device_id=device_id, key=event.key)
    return "unapproved", 1


def _started(event: ProviderEvent) -> datetime:
    """When the connection began: an end record carries its duration."""
    if event.kind == "connection.ended" and event.duration_seconds:
        return event.at - timedelta(seconds=event.duration_seconds)
    return event.at


async def _other_specs(
    db: AsyncSession, session: RemoteSession, device: Device
) -> list[SessionSpec]:
    rows = (
        await db.scalars(
            select(RemoteSession).where(
                RemoteSession.device_id == device.id,
                RemoteSession.id != session.id,
                RemoteSession.approved_at.is_not(None),
            )
        )
    ).all()
    specs = []
    for row in rows:
        _, spec, _, _, _ = await session_context(db, row)
        specs.append(spec)
    return specs


async def due_for_reconcile(
    db: AsyncSession, *, now: datetime, every: timedelta, settle: timedelta
) -> list[str]:
    """Sessions whose provider record should be read now: every ``every`` while approved or
    active, and once more ``settle`` after the end (providers write their logs late)."""
    link, row = ProviderSessionLink, RemoteSession
    running = (SessionState.approved.value, SessionState.active.value)
    candidates = await db.execute(
        select(link, row)
        .join(row, row.id == link.session_id)
        # A superset of what is due (an end is never after valid_until); refined below.
        .where(
            or_(
                link.reconciled_at.is_(None),
                row.state.in_(running),
                link.reconciled_at < link.valid_until,
            )
        )
        .limit(500)
    )
    due: list[str] = []
    for found, session in candidates.all():
        last = found.reconciled_at
        if session.state in running:
            if last is None or last <= now - every:
                due.append(session.id)
            continue
        end = approved_window(session).end
        if now >= end + settle and (last is None or last < end):
            due.append(session.id)
    return due


async def _touch(db: AsyncSession, session_id: str, now: datetime) -> None:
    link = await db.get(ProviderSessionLink, session_id)
    if link is not None:
        link.reconciled_at = now


async def reconcile_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    every: timedelta = RECONCILE_EVERY,
    settle: timedelta = RECONCILE_SETTLE,
    now: datetime | None = None,
) -> int:
    """Seal what providers recorded about running and just-ended sessions (the background
    loop runs this). One transaction per session: a provider that is down rolls back only
    its own session's work, which the next run does again. Returns audit events recorded."""
    now = now or utcnow()
    async with sessionmaker() as db:
        due = await due_for_reconcile(db, now=now, every=every, settle=settle)
    recorded = 0
    for session_id in due:
        try:
            async with transaction(sessionmaker) as db:
                session = await db.get(RemoteSession, session_id)
                if session is not None:
                    recorded += await reconcile(db, session)
        except BrokerError as exc:  # an outage: logged, retried on the next run
            log.warning(
                "providers.reconcile_failed",
                session_id=session_id,
                error=exc.code,
                detail=exc.detail,
            )
    return recorded
