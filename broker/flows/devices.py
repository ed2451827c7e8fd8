"""A device that had sessions stays: their audit trail names it.

The devices service removes devices; whether one may go depends on the sessions that name
it, which the devices domain (below sessions) does not read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.principal import Principal
from broker.devices import service as devices
from broker.devices.models import Device, DeviceGroup
from broker.devices.repository import DeviceFilter
from broker.errors import Conflict
from broker.evidence.service import Actor
from broker.gateway import presence
from broker.sessions import service as sessions
from broker.sessions.repository import SessionFilter, SessionRecord


async def delete_device(db: AsyncSession, *, actor: Actor, device_id: str) -> None:
    """Remove a device that never had a session; one with sessions stays (409)."""
    device = await devices.get_device(db, device_id)
    count = await sessions.count_for_device(db, device.id)
    if count:
        raise Conflict(
            f"device {device.name!r} has {count} session(s) and is kept for their audit "
            "trail; move it to another group or rename it instead"
        )
    await devices.delete_device(db, actor=actor, device_id=device_id)


@dataclass(frozen=True)
class Listed:
    """A device as the inventory shows it: its group and its agent's presence."""

    device: Device
    group: DeviceGroup
    seen: presence.Seen


async def inventory(
    db: AsyncSession, principal: Principal, filters: DeviceFilter, *, limit: int, offset: int
) -> tuple[list[Listed], int]:
    """A page of the devices ``principal`` may see with presence, and how many match."""
    filters = replace(filters, online_ids=presence.online_ids())
    items, total = await devices.list_devices(db, principal, filters, limit=limit, offset=offset)
    groups = await devices.groups_for(db, items)
    seen = await presence.seen(db, (d.id for d in items))
    listed = [Listed(d, groups[d.group_id], seen.get(d.id, presence.OFFLINE)) for d in items]
    return listed, total


async def device_view(
    db: AsyncSession, principal: Principal, device_id: str, *, recent: int = 10
) -> tuple[Listed, list[SessionRecord]]:
    """One device the principal may see, with presence and its most recent sessions (a
    technician sees only their own sessions among them)."""
    device = await devices.get_device_for(db, principal, device_id)
    group = await devices.get_group(db, device.group_id)
    seen = (await presence.seen(db, [device.id])).get(device.id, presence.OFFLINE)
    records = (
        await sessions.list_sessions(
            db, principal, SessionFilter(device_id=device.id), limit=recent, offset=0
        )
        if recent
        else []
    )
    return Listed(device, group, seen), records


async def retire_device(db: AsyncSession, *, actor: Actor, device_id: str) -> Device:
    """Retire a device and revoke its agent key in one transaction (one audit event)."""
    device = await devices.retire_device(db, actor=actor, device_id=device_id)
    await presence.revoke_key(db, device.id)
    return device
