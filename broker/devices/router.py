"""The device-group and device APIs (thin: parse, authorise, call one service function).

Reads need ``devices:read`` (technicians see only their groups and those groups' devices;
admins and auditors see all); changes need ``devices:write`` (admins).

- ``GET /device-groups`` · ``POST /device-groups`` (201; duplicate name → 409)
- ``GET /device-groups/{id}`` · ``PATCH /device-groups/{id}``
- ``PUT /device-groups/{id}/members/{user_id}`` (technicians only; idempotent)
- ``DELETE /device-groups/{id}/members/{user_id}`` (204)
- ``GET /devices`` filters ``group_id``, ``provider``, ``q``, ``online``, ``include_retired``,
  ``limit``/``offset``; each item carries its agent's presence (``online``, ``last_seen_at``)
- ``GET /device-names?prefix=&limit=``: id and name of the devices whose name starts with
  ``prefix`` (at most ``limit``, 20 by default): a search form's suggestions
- ``POST /devices`` (201; duplicate provider + provider id → 409)
- ``GET /devices/{id}`` (with presence) · ``PATCH /devices/{id}`` (rename, move, …)
- ``POST /devices/{id}/retire`` (kept for its audit trail, agent key revoked; twice → 409)
- ``DELETE /devices/{id}`` (204; a device with sessions → 409)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from broker.auth.deps import require
from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.db.session import DbSession
from broker.devices import service
from broker.devices.models import DeviceGroup
from broker.devices.repository import DeviceFilter
from broker.devices.schemas import (
    DeviceCreate,
    DeviceList,
    DeviceNames,
    DeviceOut,
    DeviceSuggestion,
    DeviceUpdate,
    GroupCreate,
    GroupList,
    GroupOut,
    GroupUpdate,
)
from broker.flows import devices as flows

router = APIRouter(tags=["devices"])
# Past any real list, and within a 64-bit integer on PostgreSQL (a larger one was a 500).
MAX_OFFSET = 2**31 - 1
Reader = Annotated[Principal, Depends(require(Scope.devices_read))]
Writer = Annotated[Principal, Depends(require(Scope.devices_write))]
Id = Annotated[str, Path(min_length=1, max_length=36)]


async def _group_out(db: DbSession, group: DeviceGroup) -> GroupOut:
    return GroupOut.of(group, await service.group_members(db, group.id))


@router.get("/device-groups")
async def list_groups(principal: Reader, db: DbSession) -> GroupList:
    groups = await service.list_groups(db, principal)
    return GroupList(items=[await _group_out(db, g) for g in groups])


@router.post("/device-groups", status_code=201)
async def create_group(body: GroupCreate, principal: Writer, db: DbSession) -> GroupOut:
    group = await service.create_group(db, actor=principal.actor(), **body.model_dump())
    return await _group_out(db, group)


@router.get("/device-groups/{group_id}")
async def get_group(group_id: Id, principal: Reader, db: DbSession) -> GroupOut:
    return await _group_out(db, await service.get_group_for(db, principal, group_id))


@router.patch("/device-groups/{group_id}")
async def update_group(
    group_id: Id, body: GroupUpdate, principal: Writer, db: DbSession
) -> GroupOut:
    changes = body.model_dump(include=body.model_fields_set)
    group = await service.update_group(
        db, actor=principal.actor(), group_id=group_id, changes=changes
    )
    return await _group_out(db, group)


@router.put("/device-groups/{group_id}/members/{user_id}")
async def add_member(group_id: Id, user_id: Id, principal: Writer, db: DbSession) -> GroupOut:
    await service.add_member(db, actor=principal.actor(), group_id=group_id, user_id=user_id)
    return await _group_out(db, await service.get_group(db, group_id))


@router.delete("/device-groups/{group_id}/members/{user_id}", status_code=204)
async def remove_member(group_id: Id, user_id: Id, principal: Writer, db: DbSession) -> Response:
    await service.remove_member(db, actor=principal.actor(), group_id=group_id, user_id=user_id)
    return Response(status_code=204)


@router.get("/devices")
async def list_devices(
    *,
    principal: Reader,
    db: DbSession,
    group_id: Annotated[str | None, Query(min_length=1, max_length=36)] = None,
    provider: Annotated[str | None, Query(pattern=r"^[a-z0-9_-]{1,30}$")] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    online: Annotated[bool | None, Query()] = None,
    include_retired: Annotated[bool, Query()] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> DeviceList:
    filters = DeviceFilter(
        group_id=group_id,
        provider=provider,
        q=q,
        online=online,
        retired=None if include_retired else False,
    )
    items, total = await flows.inventory(db, principal, filters, limit=limit, offset=offset)
    return DeviceList(
        items=[_out(x) for x in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/device-names")
async def device_names(
    *,
    principal: Reader,
    db: DbSession,
    prefix: Annotated[str, Query(max_length=100)] = "",
    limit: Annotated[int, Query(ge=1, le=50)] = 20,
) -> DeviceNames:
    """Devices whose name starts with ``prefix`` (case kept), by name, narrowed like
    ``GET /devices``: what the auditor's search suggests as one types a device."""
    found = await service.device_names(db, principal, prefix, limit=limit)
    return DeviceNames(items=[DeviceSuggestion(id=i, name=n) for i, n in found])


@router.post("/devices", status_code=201)
async def create_device(body: DeviceCreate, principal: Writer, db: DbSession) -> DeviceOut:
    device = await service.create_device(db, actor=principal.actor(), **body.model_dump())
    # A new device has no agent link yet.
    return DeviceOut.of(device, await service.get_group(db, device.group_id), online=False)


def _out(x: flows.Listed) -> DeviceOut:
    return DeviceOut.of(x.device, x.group, online=x.seen.online, last_seen_at=x.seen.last_seen_at)


@router.get("/devices/{device_id}")
async def get_device(device_id: Id, principal: Reader, db: DbSession) -> DeviceOut:
    listed, _ = await flows.device_view(db, principal, device_id, recent=0)
    return _out(listed)


@router.post("/devices/{device_id}/retire")
async def retire_device(device_id: Id, principal: Writer, db: DbSession) -> DeviceOut:
    device = await flows.retire_device(db, actor=principal.actor(), device_id=device_id)
    return DeviceOut.of(device, await service.get_group(db, device.group_id), online=False)


@router.patch("/devices/{device_id}")
async def update_device(
    device_id: Id, body: DeviceUpdate, principal: Writer, db: DbSession
) -> DeviceOut:
    changes = body.model_dump(include=body.model_fields_set)
    await service.update_device(db, actor=principal.actor(), device_id=device_id, changes=changes)
    listed, _ = await flows.device_view(db, principal, device_id, recent=0)
    return _out(listed)


@router.delete("/devices/{device_id}", status_code=204)
async def delete_device(device_id: Id, principal: Writer, db: DbSession) -> Response:
    await flows.delete_device(db, actor=principal.actor(), device_id=device_id)
    return Response(status_code=204)
