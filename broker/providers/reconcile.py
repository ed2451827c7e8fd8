"""Reconciliation: seal what a provider recorded about a session's device into the audit log.

Connections made through the session's access inside its window become
``provider.connection``; connections through it outside the window, and connections no
approved session accounts for, become ``provider.alert``. Every provider event is marked in
``provider_event_marks`` in the same transaction as its audit event, so it is sealed once; an
outage raises before anything is marked, and the next run seals what was missed.

A provider is another system on the network, so nothing holds a transaction while it answers
(as :mod:`broker.providers.service` grants and withdraws): the session's context is read in a
short transaction, the provider is asked what it recorded with none open, the marks of those
events are read in another short one, the provider is asked to annotate or close what needs
it, and only then is the answer sealed, in a transaction left open for the caller to commit.
A mark written meanwhile by another run (the device-wide sweep, another replica) wins: that
event is skipped here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.db.aftercommit import commit, transaction
from broker.db.base import utcnow
from broker.errors import BrokerError
from broker.evidence.events import EventType
from broker.evidence.service import record_event
from broker.providers import registry
from broker.providers.base import (
    DeviceRef,
    ProviderEvent,
    RemoteAccessProvider,
    SessionSpec,
    Window,
)
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


@dataclass(frozen=True)
class Verdict:
    """What one provider event comes to, decided before anything is sealed."""

    event: ProviderEvent
    verdict: str  # connection | outside_window | unapproved | late (a sealed one running late)
    session_id: str | None
    ticket_ref: str | None
    annotate: str | None = None
    terminate: bool = False
    closed: bool = False
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Context:
    provider: str
    ticket_ref: str
    spec: SessionSpec
    device_id: str
    device: DeviceRef
    others: list[SessionSpec]


async def reconcile(db: AsyncSession, session: RemoteSession) -> int:
    """Seal what the provider recorded on the session's device into the audit log.

    Call it with no transaction open that must stay open: it commits its reads. The sealed
    events are flushed in a transaction the caller commits. Returns the events recorded.
    """
    ctx = await _context(db, session.id)
    await commit(db)
    provider = registry.get(ctx.provider)
    now = utcnow()
    window = Window(ctx.spec.window.start - LOOKBACK, max(now, ctx.spec.window.start))
    events = await provider.collect(ctx.device, window)  # no transaction open
    if not events:
        await _touch(db, session.id, now)
        return 0
    marks = await read_marks(db, provider.name, events)
    await commit(db)
    verdicts = [
        v
        for v in (_judge(provider, e, ctx, marks.get(e.key), now) for e in events)
        if v is not None
    ]
    verdicts = await act_on(provider, verdicts, ctx.ticket_ref)  # no transaction open
    recorded = await seal(db, provider.name, ctx.device_id, verdicts)
    await _touch(db, session.id, now)
    return recorded


async def _context(db: AsyncSession, session_id: str) -> _Context:
    session = await db.get(RemoteSession, session_id, populate_existing=True)
    if session is None:
        raise BrokerError(f"no session {session_id}")
    ticket, spec, device_row, device, _ = await session_context(db, session)
    others = await other_specs(db, device_row.id, exclude=session.id)
    return _Context(session.provider, ticket.ref, spec, device_row.id, device, others)


def _judge(
    provider: RemoteAccessProvider,
    event: ProviderEvent,
    ctx: _Context,
    mark: ProviderEventMark | None,
    now: datetime,
) -> Verdict | None:
    spec = ctx.spec
    base = {"session_id": spec.session_id, "device_id": ctx.device_id, **event.audit_data()}
    if mark is not None:
        # Sealed as fine while the window was open, still running now that it is over.
        late = mark.verdict == "connection" and mark.session_id == spec.session_id
        if late and event.active and now >= spec.window.end:
            return Verdict(event, "late", spec.session_id, ctx.ticket_ref, terminate=True,
                           data=base)  # fmt: skip
        return None
    if provider.belongs_to(event, spec):
        note = f"{ctx.ticket_ref} · supportbroker session {spec.session_id}"
        running_late = event.active and now >= spec.window.end
        if spec.window.contains(started(event)) and not running_late:
            return Verdict(event, "connection", spec.session_id, ctx.ticket_ref, annotate=note,
                           data=base)  # fmt: skip
        return Verdict(event, "outside_window", spec.session_id, ctx.ticket_ref, annotate=note,
                       terminate=event.active, data=base)  # fmt: skip
    if any(provider.belongs_to(event, other) for other in ctx.others):
        return None  # another session's connection: its own reconciliation seals it
    return unapproved(event, ctx.device_id)


def unapproved(event: ProviderEvent, device_id: str) -> Verdict:
    """A connection no approved session accounts for (closed where still running)."""
    data = {"device_id": device_id, **event.audit_data()}
    return Verdict(event, "unapproved", None, None, terminate=event.active, data=data)


def started(event: ProviderEvent) -> datetime:
    """When the connection began: an end record carries its duration."""
    if event.kind == "connection.ended" and event.duration_seconds:
        return event.at - timedelta(seconds=event.duration_seconds)
    return event.at


async def read_marks(
    db: AsyncSession, provider: str, events: Sequence[ProviderEvent]
) -> dict[str, ProviderEventMark]:
    rows = await db.scalars(
        select(ProviderEventMark).where(
            ProviderEventMark.provider == provider,
            ProviderEventMark.event_key.in_([e.key for e in events]),
        )
    )
    return {mark.event_key: mark for mark in rows.all()}


async def act_on(
    provider: RemoteAccessProvider, verdicts: list[Verdict], ticket_ref: str | None
) -> list[Verdict]:
    """Ask the provider to annotate and close what the verdicts say (no transaction open)."""
    done: list[Verdict] = []
    for v in verdicts:
        if v.annotate is not None:
            await provider.annotate(v.event, v.annotate)
        closed = await provider.terminate(v.event) if v.terminate else False
        done.append(
            Verdict(v.event, v.verdict, v.session_id, v.ticket_ref, closed=closed, data=v.data)
        )
    return done


async def seal(db: AsyncSession, provider: str, device_id: str, verdicts: list[Verdict]) -> int:
    """Seal each verdict with its mark, skipping events another run marked meanwhile."""
    marks = await read_marks(db, provider, [v.event for v in verdicts])
    actor = provider_actor(provider)
    recorded = 0
    for v in verdicts:
        mark = marks.get(v.event.key)
        if v.verdict == "late":
            if mark is None or mark.verdict != "connection":
                continue
            alert = {**v.data, "alert": "outside_window", "closed": v.closed}
            await record_event(
                db, EventType.provider_alert, ticket=v.ticket_ref, actor=actor, data=alert
            )
            mark.verdict = "outside_window"
            recorded += 1
            continue
        if mark is not None:
            continue
        recorded += await _record(db, actor, v)
        db.add(
            ProviderEventMark(
                provider=provider,
                event_key=v.event.key,
                device_id=device_id,
                session_id=v.session_id if v.verdict != "unapproved" else None,
                verdict=v.verdict,
            )
        )
    await db.flush()
    return recorded


async def _record(db: AsyncSession, actor: Any, v: Verdict) -> int:
    if v.verdict == "unapproved":
        # Not a ticket's business: the alert goes to the system stream (auditors see it there).
        alert = {**v.data, "alert": "no_approved_request", "closed": v.closed}
        alert.pop("session_id", None)
        await record_event(db, EventType.provider_alert, ticket=None, actor=actor, data=alert)
        log.warning("provider.alert", provider=v.event.provider, key=v.event.key)
        return 1
    await record_event(
        db, EventType.provider_connection, ticket=v.ticket_ref, actor=actor, data=v.data
    )
    if v.verdict == "connection":
        return 1
    alert = {**v.data, "alert": "outside_window", "closed": v.closed}
    await record_event(db, EventType.provider_alert, ticket=v.ticket_ref, actor=actor, data=alert)
    return 2


async def other_specs(
    db: AsyncSession, device_id: str, *, exclude: str | None = None
) -> list[SessionSpec]:
    """The approved sessions on the device (but ``exclude``), as a provider sees them."""
    stmt = select(RemoteSession).where(
        RemoteSession.device_id == device_id, RemoteSession.approved_at.is_not(None)
    )
    if exclude is not None:
        stmt = stmt.where(RemoteSession.id != exclude)
    specs = []
    for row in (await db.scalars(stmt)).all():
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
    await db.flush()


async def reconcile_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    every: timedelta = RECONCILE_EVERY,
    settle: timedelta = RECONCILE_SETTLE,
    now: datetime | None = None,
) -> int:
    """Seal what providers recorded about running and just-ended sessions (the background
    loop runs this). One session at a time: a provider that is down leaves only its own
    session's events unsealed, which the next run seals. Returns audit events recorded."""
    now = now or utcnow()
    async with sessionmaker() as db:
        due = await due_for_reconcile(db, now=now, every=every, settle=settle)
        await db.commit()
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
