"""A device that had sessions stays: their audit trail names it.

The devices service removes devices; whether one may go depends on the sessions that name
it, which the devices domain (below sessions) does not read.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from broker.devices import service as devices
from broker.errors import Conflict
from broker.evidence.service import Actor
from broker.sessions import service as sessions


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
