"""Provider hooks for the sessions flow, device sync, and reconciliation into the audit log.

The sessions service calls ``on_approved`` once consent is given, ``on_ended`` when a session
leaves ``approved``/``active`` for any terminal state, and ``reconcile`` after the end (and
periodically while active). Every hook writes its audit events in the caller's transaction.
A provider outage never loses an audit event: a failed ``prepare`` is recorded and the error
keeps the transaction's changes; a failed removal is recorded and retried later.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db.base import utcnow
from broker.devices.models import Device, DeviceGroup
from broker.errors import NotFound, ProviderError
from broker.evidence.events import EventType
from broker.evidence.service import record_event
from broker.providers import registry
from broker.providers.base import Launch
from broker.providers.context import approved_window, provider_actor, session_context
from broker.providers.models import ProviderSessionLink

# Re-exported: the sessions flow and the background job reach every hook through this module.
from broker.providers.reconcile import LOOKBACK, due_for_reconcile, reconcile
from broker.sessions.models import RemoteSession

__all__ = [
    "LOOKBACK",
    "approved_window",
    "due_for_reconcile",
    "launch_for",
    "on_approved",
    "on_ended",
    "reconcile",
    "retry_pending_ends",
    "sync_devices",
]

log = structlog.get_logger("broker.providers")

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
    ticket, spec, _, device, policy = await session_context(db, session)
    base = {"session_id": session.id, "device_id": device.device_id, "provider": session.provider}
    try:
        # Inside the try: a provider that is not installed or not configured fails the same way.
        provider = registry.get(session.provider)
        launch = await provider.prepare(spec, device, policy)
    except (ProviderError, NotFound) as exc:
        await record_event(
            db,
            EventType.provider_prepare_failed,
            ticket=ticket.ref,
            actor=provider_actor(session.provider),
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
        EventType.provider_prepared,
        ticket=ticket.ref,
        actor=provider_actor(provider.name),
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
    ticket, spec, _, device, _ = await session_context(db, session)
    provider = registry.get(link.provider)
    base = {"session_id": session.id, "device_id": device.device_id, "handle": link.handle}
    try:
        await provider.end(spec, device, link.handle)
    except ProviderError as exc:
        link.end_pending = True
        await record_event(
            db,
            EventType.provider_end_pending,
            ticket=ticket.ref,
            actor=provider_actor(link.provider),
            data={**base, "error": exc.detail, "expires_at": link.valid_until.isoformat()},
        )
        log.warning("provider.end_pending", session_id=session.id, provider=link.provider)
        await db.flush()
        return
    link.ended_at = utcnow()
    link.end_pending = False
    link.launch_url = None  # the credential is dead; do not keep it
    await record_event(
        db,
        EventType.provider_ended,
        ticket=ticket.ref,
        actor=provider_actor(link.provider),
        data=base,
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
        EventType.provider_devices_synced,
        ticket=None,
        actor=provider_actor(provider.name),
        data={
            "provider": provider.name,
            "seen": len(remote),
            "created": created,
            "changed": changed,
        },
    )
    await db.flush()
    return created + changed
