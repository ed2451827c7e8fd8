"""Provider hooks for the sessions flow, device sync, and reconciliation into the audit log.

The sessions service calls ``on_approved`` once consent is given, ``on_ended`` when a session
leaves ``approved``/``active`` for any terminal state, and ``reconcile`` after the end (and
periodically while active). Every hook writes its audit events in the caller's transaction.
A provider outage never loses an audit event: a failed ``prepare`` is recorded and the error
keeps the transaction's changes; a failed removal is recorded and retried later.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.models import User
from broker.db.base import utcnow
from broker.devices.models import Device, DeviceGroup
from broker.errors import NotFound, ProviderError
from broker.evidence.service import Actor, record_event
from broker.providers import registry
from broker.providers.base import (
    DeviceRef,
    GroupPolicy,
    Launch,
    ProviderEvent,
    RemoteAccessProvider,
    SessionSpec,
    Window,
)
from broker.providers.models import ProviderEventMark, ProviderSessionLink
from broker.sessions.models import RemoteSession
from broker.sessions.states import SessionState
from broker.tickets.models import Ticket

log = structlog.get_logger("broker.providers")

# How far before the approved window reconciliation looks for connections on the device.
LOOKBACK = timedelta(minutes=15)
END_COLUMNS = ("ended_at", "revoked_at", "failed_at", "expired_at")


def _actor(provider: str) -> Actor:
    return Actor(kind="system", name=f"provider:{provider}")


def approved_window(session: RemoteSession) -> Window:
    """From approval for the approved duration, cut short when the session ended earlier."""
    start = session.approved_at or utcnow()
    end = start + timedelta(minutes=session.duration_minutes)
    for column in END_COLUMNS:
        moment: datetime | None = getattr(session, column)
        if moment is not None and moment < end:
            end = max(moment, start)
    return Window(start, end)


async def _context(
    db: AsyncSession, session: RemoteSession
) -> tuple[Ticket, SessionSpec, Device, DeviceRef, GroupPolicy]:
    ticket = await db.get(Ticket, session.ticket_id)
    device = await db.get(Device, session.device_id)
    technician = await db.get(User, session.technician_id)
    if ticket is None or device is None or technician is None:
        raise NotFound(f"session {session.id} refers to a missing ticket, device or user")
    group = await db.get(DeviceGroup, device.group_id)
    group_name = group.name if group else ""
    spec = SessionSpec(
        session_id=session.id,
        ticket_ref=ticket.ref,
        technician=technician.display_name or technician.username,
        reason=session.reason,
        capabilities=tuple(session.capabilities),
        window=approved_window(session),
    )
    ref = DeviceRef(device.id, device.name, device.provider_device_id, group_name)
    policy = GroupPolicy(group_name, unattended_allowed=bool(group and group.unattended_allowed))
    return ticket, spec, device, ref, policy


# Where a link keeps the launch's terminal command and port (not credentials: no columns).
OPENS_KEY = "_opens"


def _launch_from_link(link: ProviderSessionLink) -> Launch:
    details = dict(link.details)
    opens = details.pop(OPENS_KEY, {})
    return Launch(
        provider=link.provider,
        handle=link.handle,
        expires_at=link.valid_until,
        url=link.launch_url,
        uri=link.launch_uri,
        terminal=opens.get("terminal"),
        port=opens.get("port"),
        details=details,
    )


def _link_details(launch: Launch) -> dict[str, Any]:
    opens = {"terminal": launch.terminal, "port": launch.port}
    kept = {k: v for k, v in opens.items() if v is not None}
    return {**launch.details, OPENS_KEY: kept} if kept else dict(launch.details)


async def launch_for(db: AsyncSession, session: RemoteSession) -> Launch | None:
    """What the technician opens for ``session`` (None before approval or after the end)."""
    link = await db.get(ProviderSessionLink, session.id)
    if link is None or link.ended_at is not None:
        return None
    return _launch_from_link(link)


async def on_approved(db: AsyncSession, session: RemoteSession) -> Launch:
    """Create provider access for the approved session; idempotent per session.

    Raises ``ProviderError`` (with ``keep_changes``: the ``provider.prepare_failed`` event is
    committed) when the provider cannot; the caller then moves the session to ``failed``.
    """
    existing = await db.get(ProviderSessionLink, session.id)
    if existing is not None and existing.ended_at is None:
        return _launch_from_link(existing)
    ticket, spec, _, device, policy = await _context(db, session)
    base = {"session_id": session.id, "device_id": device.device_id, "provider": session.provider}
    try:
        # Inside the try: a provider that is not installed or not configured fails the same way.
        provider = registry.get(session.provider)
        launch = await provider.prepare(spec, device, policy)
    except (ProviderError, NotFound) as exc:
        await record_event(
            db,
            "provider.prepare_failed",
            ticket=ticket.ref,
            actor=_actor(session.provider),
            data={**base, "error": exc.detail},
        )
        log.warning("provider.prepare_failed", session_id=session.id, provider=session.provider)
        raise ProviderError(exc.detail, keep_changes=True) from exc
    db.add(
        ProviderSessionLink(
            session_id=session.id,
            provider=provider.name,
            handle=launch.handle,
            launch_url=launch.url,
            launch_uri=launch.uri,
            valid_from=spec.window.start,
            valid_until=launch.expires_at,
            details=_link_details(launch),
        )
    )
    await record_event(
        db,
        "provider.prepared",
        ticket=ticket.ref,
        actor=_actor(provider.name),
        data={
            **base,
            "handle": launch.handle,
            "capabilities": list(spec.capabilities),
            "valid_from": spec.window.start.isoformat(),
            "valid_until": launch.expires_at.isoformat(),
            "opens": [k for k in ("url", "uri", "terminal", "port") if getattr(launch, k)],
            **launch.details,
        },
    )
    await db.flush()
    log.info("provider.prepared", session_id=session.id, provider=provider.name)
    return launch


async def on_ended(db: AsyncSession, session: RemoteSession) -> None:
    """Withdraw provider access (remove the share). Never raises for a provider outage: the
    failure is recorded, the link stays ``end_pending`` for :func:`retry_pending_ends`, and
    the provider-side window still runs out on its own."""
    link = await db.get(ProviderSessionLink, session.id)
    if link is None or link.ended_at is not None:
        return
    ticket, spec, _, device, _ = await _context(db, session)
    provider = registry.get(link.provider)
    base = {"session_id": session.id, "device_id": device.device_id, "handle": link.handle}
    try:
        await provider.end(spec, device, link.handle)
    except ProviderError as exc:
        link.end_pending = True
        await record_event(
            db,
            "provider.end_pending",
            ticket=ticket.ref,
            actor=_actor(link.provider),
            data={**base, "error": exc.detail, "expires_at": link.valid_until.isoformat()},
        )
        log.warning("provider.end_pending", session_id=session.id, provider=link.provider)
        await db.flush()
        return
    link.ended_at = utcnow()
    link.end_pending = False
    link.launch_url = None  # the credential is dead; do not keep it
    await record_event(
        db, "provider.ended", ticket=ticket.ref, actor=_actor(link.provider), data=base
    )
    await db.flush()


async def retry_pending_ends(db: AsyncSession) -> int:
    """Retry removals that failed during an outage; returns how many succeeded now."""
    links = (
        await db.scalars(select(ProviderSessionLink).where(ProviderSessionLink.end_pending))
    ).all()
    done = 0
    for link in links:
        session = await db.get(RemoteSession, link.session_id)
        if session is None:
            continue
        await on_ended(db, session)
        done += int(link.ended_at is not None)
    return done


async def reconcile(db: AsyncSession, session: RemoteSession) -> int:
    """Seal what the provider recorded on the session's device into the audit log.

    Connections made through this session's access inside its window become
    ``provider.connection``; connections through it outside the window, and connections no
    approved session accounts for, become ``provider.alert`` (closed when still running and
    the provider can). Each provider event is sealed once. Returns the events recorded.
    """
    ticket, spec, device_row, device, _ = await _context(db, session)
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
                actor = _actor(provider.name)
                await record_event(db, "provider.alert", ticket=ticket.ref, actor=actor, data=alert)
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
    actor = _actor(provider.name)
    if provider.belongs_to(event, spec):
        await record_event(db, "provider.connection", ticket=ticket_ref, actor=actor, data=data)
        await provider.annotate(event, f"{ticket_ref} · supportbroker session {spec.session_id}")
        running_late = event.active and now >= spec.window.end
        if spec.window.contains(_started(event)) and not running_late:
            return "connection", 1
        closed = await provider.terminate(event) if event.active else False
        alert = {**data, "alert": "outside_window", "closed": closed}
        await record_event(db, "provider.alert", ticket=ticket_ref, actor=actor, data=alert)
        return "outside_window", 2
    if any(provider.belongs_to(event, other) for other in others):
        return None, 0
    closed = await provider.terminate(event) if event.active else False
    alert = {**data, "alert": "no_approved_request", "closed": closed}
    alert.pop("session_id")
    # Not this ticket's business: the alert goes to the system stream (auditors see it there).
    await record_event(db, "provider.alert", ticket=None, actor=actor, data=alert)
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
        _, spec, _, _, _ = await _context(db, row)
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


async def sync_devices(db: AsyncSession, provider_name: str) -> int:
    """Import the provider's groups and devices into ours; returns devices created or changed."""
    provider = registry.get(provider_name)
    remote = await provider.list_devices()
    groups = {g.name: g for g in (await db.scalars(select(DeviceGroup))).all()}
    existing = {
        d.provider_device_id: d
        for d in (await db.scalars(select(Device).where(Device.provider == provider.name))).all()
    }
    created = changed = 0
    for item in remote:
        group = groups.get(item.group_name)
        if group is None:
            group = DeviceGroup(
                name=item.group_name[:100], description=f"imported from {provider.name}"
            )
            db.add(group)
            await db.flush()
            groups[group.name] = group
        device = existing.get(item.provider_device_id)
        if device is None:
            db.add(
                Device(
                    name=item.name[:200],
                    group_id=group.id,
                    provider=provider.name,
                    provider_device_id=item.provider_device_id,
                )
            )
            created += 1
        elif device.name != item.name[:200] or device.group_id != group.id:
            device.name, device.group_id = item.name[:200], group.id
            changed += 1
    await record_event(
        db,
        "provider.devices_synced",
        ticket=None,
        actor=_actor(provider.name),
        data={
            "provider": provider.name,
            "seen": len(remote),
            "created": created,
            "changed": changed,
        },
    )
    await db.flush()
    return created + changed
