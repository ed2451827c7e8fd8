"""What the provider hooks need to know about one session: the approved window, the plain
values a provider sees (``SessionSpec``, ``DeviceRef``, ``GroupPolicy``) and who acts."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.models import User
from broker.db.base import utcnow
from broker.devices.models import Device, DeviceGroup
from broker.errors import NotFound
from broker.evidence.service import Actor
from broker.providers.base import DeviceRef, GroupPolicy, SessionSpec, Window
from broker.sessions.models import RemoteSession
from broker.tickets.models import Ticket

END_COLUMNS = ("ended_at", "revoked_at", "failed_at", "expired_at")


def provider_actor(provider: str) -> Actor:
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


async def session_context(
    db: AsyncSession, session: RemoteSession
) -> tuple[Ticket, SessionSpec, Device, DeviceRef, GroupPolicy]:
    """Our rows for ``session`` and the plain values a provider gets."""
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
