"""The device-wide sweep: outside connections to managed devices, noticed without a session.

Reconciliation reads a device's connections only while one of our sessions on it runs (and
once after). Someone connecting to a managed device through MeshCentral or AnyDesk when no
session of ours is there would go unseen; the sweep reads each managed device's connections
periodically (every ``provider_sweep_seconds``, from a quarter of an hour before the last
sweep: providers write their logs late) and flags each one no approved session accounts for
as ``provider.alert`` / ``no_approved_request`` on the system stream, closing it where the
provider can. Connections made through a session's access are left to that session's
reconciliation. Events are marked exactly as reconciliation marks them, so nothing is sealed
twice whichever of the two reads it first.

Only providers that say they can (``device_sweep = True``: MeshCentral, AnyDesk) are swept.
Like reconciliation, nothing holds a transaction while a provider answers: which devices are
due and what their approved sessions are is read in a short transaction, the provider is
asked with none open, and the answer is sealed (with the device's sweep time) in a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.db.aftercommit import commit
from broker.db.base import utcnow
from broker.devices.models import Device
from broker.errors import BrokerError, NotFound, ProviderError
from broker.providers import registry
from broker.providers.base import DeviceRef, SessionSpec, Window
from broker.providers.models import ProviderDeviceSweep
from broker.providers.reconcile import (
    LOOKBACK,
    act_on,
    other_specs,
    read_marks,
    seal,
    unapproved,
)

log = structlog.get_logger("broker.providers")

# A device swept for the first time is read this far back.
FIRST_LOOKBACK = timedelta(hours=1)
DEVICES_PER_RUN = 200


@dataclass(frozen=True)
class _Target:
    device_id: str
    device: DeviceRef
    provider: str
    since: datetime
    specs: list[SessionSpec]


def sweeps(provider_name: str) -> bool:
    """Whether ``provider_name`` is configured here and sweeps its devices."""
    try:
        provider = registry.get(provider_name)
    except (ProviderError, NotFound):
        return False  # not installed or not configured: nothing to ask
    return bool(getattr(provider, "device_sweep", False))


async def sweep_devices(
    maker: async_sessionmaker[AsyncSession], *, every: timedelta, now: datetime | None = None
) -> int:
    """Sweep the managed devices that are due; returns the alerts sealed."""
    now = now or utcnow()
    async with maker() as db:
        targets = await _due(db, every=every, now=now)
        await commit(db)
    recorded = 0
    for target in targets:
        async with maker() as db:
            try:
                recorded += await sweep_device(db, target, now=now)
                await commit(db)
            except BrokerError as exc:  # an outage: recorded on the sweep row, tried again
                await db.rollback()
                await _failed(db, target, now, exc.detail)
                await commit(db)
                log.warning("providers.sweep_failed", device_id=target.device_id, error=exc.code)
    return recorded


async def _due(db: AsyncSession, *, every: timedelta, now: datetime) -> list[_Target]:
    swept = {s.device_id: s for s in (await db.scalars(select(ProviderDeviceSweep))).all()}
    providers = {p: sweeps(p) for p in (await db.scalars(select(Device.provider).distinct()))}
    devices = (
        await db.scalars(
            select(Device).where(Device.provider.in_([p for p, yes in providers.items() if yes]))
        )
    ).all()
    targets: list[_Target] = []
    for device in devices:
        last = swept.get(device.id)
        if last is not None and last.attempted_at > now - every:
            continue
        since = (last.swept_at - LOOKBACK) if last is not None else now - FIRST_LOOKBACK
        ref = DeviceRef(device.id, device.name, device.provider_device_id, "")
        specs = await other_specs(db, device.id)
        targets.append(_Target(device.id, ref, device.provider, since, specs))
        if len(targets) >= DEVICES_PER_RUN:
            break
    return targets


async def sweep_device(db: AsyncSession, target: _Target, *, now: datetime) -> int:
    """Read one device's connections, flag the unapproved ones; the caller commits."""
    provider = registry.get(target.provider)
    events = await provider.collect(target.device, Window(target.since, now))  # none open
    marks = await read_marks(db, provider.name, events) if events else {}
    await commit(db)
    verdicts = [
        unapproved(e, target.device_id)
        for e in events
        if e.key not in marks and not any(provider.belongs_to(e, s) for s in target.specs)
    ]
    verdicts = await act_on(provider, verdicts, None)  # close what still runs: none open
    recorded = await seal(db, provider.name, target.device_id, verdicts)
    await _swept(db, target, now, None)
    return recorded


async def _swept(db: AsyncSession, target: _Target, now: datetime, error: str | None) -> None:
    row = await db.get(ProviderDeviceSweep, target.device_id)
    if row is None:
        # Never swept: a failure starts the next try from the same place.
        start = now if error is None else target.since + LOOKBACK
        row = ProviderDeviceSweep(
            device_id=target.device_id, provider=target.provider, swept_at=start
        )
        db.add(row)
    elif error is None:
        row.swept_at = now
    row.attempted_at = now
    row.last_error = error[:500] if error else None
    await db.flush()


async def _failed(db: AsyncSession, target: _Target, now: datetime, error: str) -> None:
    await _swept(db, target, now, error)
