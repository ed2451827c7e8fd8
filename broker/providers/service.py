"""Provider access for sessions, device sync, and reconciliation into the audit log.

A provider is another system on the network, so nothing here holds a transaction while it
answers (``broker.db.aftercommit``): the session lifecycle (``broker.flows.lifecycle``) calls
:func:`grant` once an approval has committed and :func:`withdraw` once an end has committed.
Each reads what the provider needs in a short transaction, asks the provider with no
transaction open, then seals the answer in a new one. What is owed survives a crash: an
approved session without its link is granted by the background job (:func:`owed_grants`),
and a link marked ``end_pending`` in the end's own transaction (:func:`owe_end`) is withdrawn
by :func:`retry_pending_ends` until the provider takes it. ``reconcile`` reads what the
provider recorded, after the end and periodically while the session runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.db.aftercommit import commit
from broker.db.base import utcnow
from broker.devices.models import Device, DeviceGroup
from broker.errors import NotFound, ProviderError
from broker.evidence.events import EventType
from broker.evidence.service import record_event
from broker.providers import registry
from broker.providers.base import DeviceRef, GroupPolicy, Launch, SessionSpec
from broker.providers.context import approved_window, provider_actor, session_context
from broker.providers.models import ProviderSessionLink

# Re-exported: the flows and the background jobs reach every provider call through this module.
from broker.providers.reconcile import LOOKBACK, due_for_reconcile, reconcile, reconcile_due
from broker.providers.sweep import sweep_devices
from broker.sessions.models import RemoteSession
from broker.sessions.states import SessionState

__all__ = [
    "LOOKBACK",
    "Grant",
    "approved_window",
    "due_for_reconcile",
    "grant",
    "launch_for",
    "owe_end",
    "owed_grants",
    "reconcile",
    "reconcile_due",
    "retry_pending_ends",
    "sweep_devices",
    "sync_devices",
    "withdraw",
]

log = structlog.get_logger("broker.providers")
T = TypeVar("T")

# Where a link keeps the launch's terminal command and port (not credentials: no columns).
OPENS_KEY = "_opens"
# States in which a session holds (or is owed) its provider access.
GRANTED = (SessionState.approved.value, SessionState.active.value)


@dataclass(frozen=True)
class Grant:
    """What asking the provider came to. ``problem``: why it could not (its
    ``provider.prepare_failed`` is written, not committed: the caller commits it with the
    session's failure). ``withdraw``: the session ended while the provider answered, so what
    was just granted is owed back at once (the link is marked ``end_pending``)."""

    problem: str | None = None
    withdraw: bool = False
    provider: str = ""


@dataclass(frozen=True)
class _Ask:
    """What a provider call needs, read before any provider is asked."""

    provider: str
    ticket_ref: str
    spec: SessionSpec
    device: DeviceRef
    policy: GroupPolicy
    handle: str | None = None
    valid_until: datetime | None = None

    def facts(self) -> dict[str, Any]:
        return {"session_id": self.spec.session_id, "device_id": self.device.device_id}


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


async def _ask_for(db: AsyncSession, session: RemoteSession, provider: str) -> _Ask:
    ticket, spec, _, device, policy = await session_context(db, session)
    return _Ask(provider, ticket.ref, spec, device, policy)


async def _to_grant(db: AsyncSession, session_id: str) -> _Ask | None:
    session = await db.get(RemoteSession, session_id, populate_existing=True)
    if session is None or session.state not in GRANTED:
        return None
    if await db.get(ProviderSessionLink, session_id) is not None:
        return None  # granted already (an end of it is withdraw's business)
    return await _ask_for(db, session, session.provider)


async def grant(db: AsyncSession, session_id: str) -> Grant:
    """Create provider access for an approved (or already active) session; call it outside
    any transaction. Nothing happens for a session that has its access or is no longer open.

    Success seals the link and ``provider.prepared`` in a transaction left open for the
    caller to commit, as is a failure's ``provider.prepare_failed`` (see :class:`Grant`)."""
    ask = await _read(db, _to_grant, session_id)
    if ask is None:
        return Grant()
    base = {**ask.facts(), "provider": ask.provider}
    try:
        # Inside the try: a provider that is not installed or not configured fails the same way.
        provider = registry.get(ask.provider)
        launch = await provider.prepare(ask.spec, ask.device, ask.policy)
    except (ProviderError, NotFound) as exc:
        await record_event(
            db,
            EventType.provider_prepare_failed,
            ticket=ask.ticket_ref,
            actor=provider_actor(ask.provider),
            data={**base, "error": exc.detail},
        )
        log.warning("provider.prepare_failed", session_id=session_id, provider=ask.provider)
        why = f"provider {ask.provider} could not open the session: {exc.detail}"
        return Grant(problem=why, provider=ask.provider)
    # The session row is locked while the link is written, so an end committing meanwhile
    # either sees the link (and owes its withdrawal) or is seen here.
    session = (
        await db.execute(
            select(RemoteSession)
            .where(RemoteSession.id == session_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    if await db.get(ProviderSessionLink, session_id) is not None:
        await commit(db)  # granted twice (the background job and a request): drop ours
        await provider.end(ask.spec, ask.device, launch.handle)
        return Grant()
    link = ProviderSessionLink(
        session_id=session_id,
        provider=provider.name,
        handle=launch.handle,
        launch_url=launch.url,
        launch_uri=launch.uri,
        valid_from=ask.spec.window.start,
        valid_until=launch.expires_at,
        details=_link_details(launch),
        end_pending=session.state not in GRANTED,
    )
    db.add(link)
    await record_event(
        db,
        EventType.provider_prepared,
        ticket=ask.ticket_ref,
        actor=provider_actor(provider.name),
        data={
            **base,
            "handle": launch.handle,
            "capabilities": list(ask.spec.capabilities),
            "valid_from": ask.spec.window.start.isoformat(),
            "valid_until": launch.expires_at.isoformat(),
            "opens": [k for k in ("url", "uri", "terminal", "port") if getattr(launch, k)],
            **launch.details,
        },
    )
    await db.flush()
    log.info("provider.prepared", session_id=session_id, provider=provider.name)
    return Grant(withdraw=link.end_pending)


async def owe_end(db: AsyncSession, session: RemoteSession) -> bool:
    """In the transaction that ends ``session``: mark its provider access as owed back
    (``end_pending``), so a crash before :func:`withdraw` leaves the debt on record."""
    link = await db.get(ProviderSessionLink, session.id)
    if link is None or link.ended_at is not None:
        return False
    link.end_pending = True
    await db.flush()
    return True


async def _to_withdraw(db: AsyncSession, session_id: str) -> _Ask | None:
    link = await db.get(ProviderSessionLink, session_id, populate_existing=True)
    session = await db.get(RemoteSession, session_id)
    if link is None or session is None or link.ended_at is not None or not link.end_pending:
        return None
    ask = await _ask_for(db, session, link.provider)
    return _Ask(
        ask.provider, ask.ticket_ref, ask.spec, ask.device, ask.policy, link.handle,
        link.valid_until,
    )  # fmt: skip


async def withdraw(db: AsyncSession, session_id: str) -> bool:
    """Withdraw the access owed back (remove the share); call it outside any transaction.
    Never raises for a provider outage: ``provider.end_pending`` is sealed, the link stays
    owed for :func:`retry_pending_ends`, and the provider-side window runs out on its own.
    True when the access is gone now (``provider.ended`` sealed and committed)."""
    ask = await _read(db, _to_withdraw, session_id)
    if ask is None:
        return False
    actor = provider_actor(ask.provider)
    base = {**ask.facts(), "handle": ask.handle}
    try:
        provider = registry.get(ask.provider)
        await provider.end(ask.spec, ask.device, ask.handle)
    except (ProviderError, NotFound) as exc:
        until = ask.valid_until.isoformat() if ask.valid_until else None
        await record_event(
            db,
            EventType.provider_end_pending,
            ticket=ask.ticket_ref,
            actor=actor,
            data={**base, "error": exc.detail, "expires_at": until},
        )
        await commit(db)
        log.warning("provider.end_pending", session_id=session_id, provider=ask.provider)
        return False
    link = await db.get(
        ProviderSessionLink, session_id, with_for_update=True, populate_existing=True
    )
    done = link is not None and link.ended_at is None  # not withdrawn by a racing retry
    if link is not None and done:
        link.ended_at = utcnow()
        link.end_pending = False
        link.launch_url = None  # the credential is dead; do not keep it
        await record_event(
            db, EventType.provider_ended, ticket=ask.ticket_ref, actor=actor, data=base
        )
    await commit(db)
    return done


async def retry_pending_ends(maker: async_sessionmaker[AsyncSession]) -> int:
    """Withdraw what is still owed back (an outage, a crash after the end committed);
    returns how many were withdrawn now."""
    async with maker() as db:
        pending = list(
            (
                await db.scalars(
                    select(ProviderSessionLink.session_id).where(ProviderSessionLink.end_pending)
                )
            ).all()
        )
        await db.commit()
        withdrawn = 0
        for session_id in pending:
            withdrawn += await withdraw(db, session_id)
        return withdrawn


async def owed_grants(maker: async_sessionmaker[AsyncSession], *, before: datetime) -> list[str]:
    """Sessions approved before ``before`` and still open that have no provider access: their
    approval committed but the grant after it never ran (a crash)."""
    link, row = ProviderSessionLink, RemoteSession
    async with maker() as db:
        found = await db.scalars(
            select(row.id)
            .outerjoin(link, link.session_id == row.id)
            .where(link.session_id.is_(None), row.state.in_(GRANTED), row.approved_at <= before)
            .limit(500)
        )
        owed = list(found.all())
        await db.commit()
    return owed


async def _read(
    db: AsyncSession, read: Callable[[AsyncSession, str], Awaitable[T]], session_id: str
) -> T:
    """``read`` in a short transaction of its own, ended before anything is asked of a
    provider (committed, not rolled back: a rollback would expire the caller's objects)."""
    result = await read(db, session_id)
    await commit(db)
    return result


async def sync_devices(db: AsyncSession, provider_name: str) -> int:
    """Import the provider's groups and devices into ours; returns devices created or changed.

    The provider is asked first, with no transaction open (whatever ``db`` had open is
    committed); what it answered is written in a transaction the caller commits."""
    if db.in_transaction():
        await commit(db)
    provider = registry.get(provider_name)
    remote = await provider.list_devices()  # no transaction open
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
