"""Device groups (with their policies), devices and membership; what a technician may see.

Technicians and supervisors see only the groups they are members of and those groups'
devices; admins and auditors see everything. Every change writes its audit event (system
stream) in the same transaction. Text and number rules are the schemas' job (API and CLI
both parse through them); this module applies the domain's rules: known providers, unique
names and provider ids, membership for technicians and supervisors only, and devices with
sessions are never deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.models import User
from broker.auth.principal import Principal
from broker.auth.service import get_user, get_user_by_name
from broker.db.base import utcnow
from broker.devices.models import Device, DeviceGroup
from broker.devices.repository import DeviceFilter, DeviceRepository, GroupRepository
from broker.errors import Conflict, NotFound, PolicyDenied, ValidationFailed
from broker.evidence.events import EventType
from broker.evidence.service import Actor, record_event
from broker.providers import registry

GROUP_FIELDS = frozenset(
    {
        "name",
        "description",
        "unattended_allowed",
        "consent_timeout_seconds",
        "record_input",
        "allowed_ports",
        "allowed_paths",
        "max_file_bytes",
        "keep_files",
        "questions",
        "approval_required",
        "approval_priorities",
        "approval_categories",
        "dual_control_playback",
    }
)
DEVICE_FIELDS = frozenset(
    {
        "name",
        "group_id",
        "provider",
        "provider_device_id",
        "asset_tag",
        "owner_name",
        "owner_contact",
    }
)
REQUIRED_DEVICE_FIELDS = frozenset({"name", "group_id", "provider", "provider_device_id"})
REQUIRED_GROUP_FIELDS = GROUP_FIELDS - {"consent_timeout_seconds"}


# Roles whose view is narrowed to the device groups they are members of: technicians work
# there, supervisors oversee there (docs/OVERSIGHT.md).
GROUP_ROLES = frozenset({"technician", "supervisor"})


def _sees_all(principal: Principal) -> bool:
    return principal.role not in GROUP_ROLES


# --- groups ----------------------------------------------------------------------------


async def get_group(db: AsyncSession, group_id: str) -> DeviceGroup:
    group = await GroupRepository(db).get(group_id)
    if group is None:
        raise NotFound(f"no device group {group_id}")
    return group


async def find_group(db: AsyncSession, ref: str) -> DeviceGroup:
    """The group named ``ref``, or else with id ``ref``."""
    found = await GroupRepository(db).by_name(ref)
    if found is not None:
        return found
    group = await GroupRepository(db).get(ref)
    if group is None:
        raise NotFound(f"no device group named {ref!r}")
    return group


async def get_group_for(db: AsyncSession, principal: Principal, group_id: str) -> DeviceGroup:
    """The group, if ``principal`` may see it: technicians only see their own groups."""
    group = await get_group(db, group_id)
    if not _sees_all(principal) and not await GroupRepository(db).is_member(
        group.id, principal.user_id or ""
    ):
        raise PolicyDenied(f"you are not a member of device group {group.name!r}")
    return group


async def list_groups(db: AsyncSession, principal: Principal) -> list[DeviceGroup]:
    member = None if _sees_all(principal) else principal.user_id or ""
    return await GroupRepository(db).visible_to(member)


async def is_member(db: AsyncSession, group_id: str, user_id: str | None) -> bool:
    """Whether ``user_id`` is a member of device group ``group_id``."""
    return bool(user_id) and await GroupRepository(db).is_member(group_id, user_id or "")


async def group_names_of_user(db: AsyncSession, user_id: str) -> list[str]:
    """The names of the device groups ``user_id`` is a member of."""
    return [g.name for g in await GroupRepository(db).visible_to(user_id)]


async def group_members(db: AsyncSession, group_id: str) -> list[User]:
    return await GroupRepository(db).members(group_id)


async def _unique_group_name(db: AsyncSession, name: str, group_id: str | None = None) -> None:
    existing = await GroupRepository(db).by_name(name)
    if existing is not None and existing.id != group_id:
        raise Conflict(f"a device group named {name!r} already exists")


async def create_group(
    db: AsyncSession,
    *,
    actor: Actor,
    name: str,
    description: str = "",
    unattended_allowed: bool = False,
    consent_timeout_seconds: int | None = None,
    record_input: bool = False,
    allowed_ports: Iterable[int] = (),
    allowed_paths: Iterable[str] = (),
    max_file_bytes: int | None = None,
    keep_files: bool = False,
    questions: Iterable[Mapping[str, str]] = (),
    approval_required: bool = False,
    approval_priorities: Iterable[str] = (),
    approval_categories: Iterable[str] = (),
    dual_control_playback: bool = False,
) -> DeviceGroup:
    await _unique_group_name(db, name)
    group = DeviceGroup(
        name=name,
        description=description,
        unattended_allowed=unattended_allowed,
        consent_timeout_seconds=consent_timeout_seconds,
        record_input=record_input,
        allowed_ports=list(allowed_ports),
        allowed_paths=list(allowed_paths),
        max_file_bytes=max_file_bytes,
        keep_files=keep_files,
        questions=[dict(q) for q in questions],
        approval_required=approval_required,
        approval_priorities=list(approval_priorities),
        approval_categories=list(approval_categories),
        dual_control_playback=dual_control_playback,
    )
    try:
        await GroupRepository(db).add(group)
    except IntegrityError as exc:  # a concurrent create took the name
        raise Conflict(f"a device group named {name!r} already exists") from exc
    await record_event(
        db,
        EventType.device_group_created,
        ticket=None,
        actor=actor,
        data={"group_id": group.id, **{f: getattr(group, f) for f in sorted(GROUP_FIELDS)}},
    )
    return group


async def update_group(
    db: AsyncSession, *, actor: Actor, group_id: str, changes: Mapping[str, Any]
) -> DeviceGroup:
    """Apply ``changes`` (a subset of the policy fields); audited with before and after."""
    unknown = sorted(set(changes) - GROUP_FIELDS)
    if unknown:
        raise ValidationFailed(f"unknown device group field(s): {', '.join(unknown)}")
    if not changes:
        raise ValidationFailed(f"give at least one of: {', '.join(sorted(GROUP_FIELDS))}")
    nulls = sorted(f for f in REQUIRED_GROUP_FIELDS & set(changes) if changes[f] is None)
    if nulls:
        raise ValidationFailed(f"may not be null: {', '.join(nulls)}")
    group = await get_group(db, group_id)
    if "name" in changes:
        await _unique_group_name(db, changes["name"], group.id)
    diff = _apply(group, changes)
    if diff:
        await db.flush()
        await record_event(
            db,
            EventType.device_group_updated,
            ticket=None,
            actor=actor,
            data={"group_id": group.id, "name": group.name, "changes": diff},
        )
    return group


def _apply(obj: DeviceGroup | Device, changes: Mapping[str, Any]) -> dict[str, Any]:
    diff: dict[str, Any] = {}
    for name, value in changes.items():
        before = getattr(obj, name)
        if before != value:
            diff[name] = {"from": before, "to": value}
            setattr(obj, name, value)
    return diff


async def add_member(db: AsyncSession, *, actor: Actor, group_id: str, user_id: str) -> bool:
    """Make technician ``user_id`` a member; False (and nothing audited) if already one."""
    group = await get_group(db, group_id)
    user = await get_user(db, user_id)
    return await _add_member(db, actor=actor, group=group, user=user)


async def add_member_by_name(
    db: AsyncSession, *, actor: Actor, group: str, username: str
) -> tuple[DeviceGroup, User, bool]:
    """The CLI's form: group by name (or id), user by username."""
    found = await find_group(db, group)
    user = await get_user_by_name(db, username)
    return found, user, await _add_member(db, actor=actor, group=found, user=user)


async def _add_member(db: AsyncSession, *, actor: Actor, group: DeviceGroup, user: User) -> bool:
    if user.role not in GROUP_ROLES:
        raise ValidationFailed(
            "only technicians and supervisors can be members of a device group; "
            f"{user.username!r} is {user.role}"
        )
    repo = GroupRepository(db)
    if await repo.is_member(group.id, user.id):
        return False
    await repo.add_member(group.id, user.id)
    await record_event(
        db,
        EventType.device_group_member_added,
        ticket=None,
        actor=actor,
        data={"group_id": group.id, "group": group.name, "user_id": user.id, "user": user.username},
    )
    return True


async def remove_member(db: AsyncSession, *, actor: Actor, group_id: str, user_id: str) -> None:
    group = await get_group(db, group_id)
    repo = GroupRepository(db)
    if not await repo.is_member(group.id, user_id):
        raise NotFound(f"user {user_id} is not a member of device group {group.name!r}")
    await repo.remove_member(group.id, user_id)
    await record_event(
        db,
        EventType.device_group_member_removed,
        ticket=None,
        actor=actor,
        data={"group_id": group.id, "group": group.name, "user_id": user_id},
    )


# --- devices ---------------------------------------------------------------------------


def known_providers() -> list[str]:
    """Provider names the broker can drive (built-ins and ``supportbroker.providers``)."""
    return sorted(registry.available())


def _check_provider(provider: str) -> None:
    known = known_providers()
    if provider not in known:
        raise ValidationFailed(
            f"provider: unknown provider {provider!r}; known: {', '.join(known)}"
        )


async def _group_ref(db: AsyncSession, group_id: str) -> DeviceGroup:
    """A group named in a body: missing is a bad request, not a missing resource."""
    group = await GroupRepository(db).get(group_id)
    if group is None:
        raise ValidationFailed(f"group_id: no device group {group_id}")
    return group


async def _unique_provider_id(
    db: AsyncSession, provider: str, provider_device_id: str, device_id: str | None = None
) -> None:
    existing = await DeviceRepository(db).by_provider_id(provider, provider_device_id)
    if existing is not None and existing.id != device_id:
        raise Conflict(
            f"{provider} device {provider_device_id!r} is already registered "
            f"as {existing.name!r} ({existing.id})"
        )


def _device_data(device: Device) -> dict[str, Any]:
    return {"device_id": device.id, **{f: getattr(device, f) for f in sorted(DEVICE_FIELDS)}}


async def create_device(
    db: AsyncSession,
    *,
    actor: Actor,
    name: str,
    group_id: str,
    provider: str,
    provider_device_id: str,
    asset_tag: str | None = None,
    owner_name: str | None = None,
    owner_contact: str | None = None,
) -> Device:
    """Register a device in a group; ``provider`` + ``provider_device_id`` is unique."""
    _check_provider(provider)
    group = await _group_ref(db, group_id)
    await _unique_provider_id(db, provider, provider_device_id)
    device = Device(
        name=name,
        group_id=group.id,
        provider=provider,
        provider_device_id=provider_device_id,
        asset_tag=asset_tag,
        owner_name=owner_name,
        owner_contact=owner_contact,
    )
    try:
        await DeviceRepository(db).add(device)
    except IntegrityError as exc:  # a concurrent create took the provider id
        raise Conflict(f"{provider} device {provider_device_id!r} is already registered") from exc
    await record_event(
        db,
        EventType.device_created,
        ticket=None,
        actor=actor,
        data={**_device_data(device), "group": group.name},
    )
    return device


async def get_device_for(db: AsyncSession, principal: Principal, device_id: str) -> Device:
    """The device, if ``principal`` may see it: technicians only see their groups' devices."""
    device = await DeviceRepository(db).get(device_id)
    if device is None:
        raise NotFound(f"no device {device_id}")
    # The member's groups, not a membership look-up: the request goes on to need them
    # (broker.sessions.gate), and this loads them once for the transaction.
    if not _sees_all(principal) and device.group_id not in {
        g.id for g in await list_groups(db, principal)
    }:
        raise PolicyDenied(f"device {device.name!r} is not in any of your device groups")
    return device


async def list_devices(
    db: AsyncSession, principal: Principal, filters: DeviceFilter, *, limit: int, offset: int
) -> tuple[list[Device], int]:
    """A page of the devices ``principal`` may see, by name, and how many match in all."""
    member = None if _sees_all(principal) else principal.user_id or ""
    repo = DeviceRepository(db)
    items = await repo.search(filters, member_id=member, limit=limit, offset=offset)
    return items, await repo.count(filters, member_id=member)


async def device_names(
    db: AsyncSession, principal: Principal, prefix: str, *, limit: int
) -> list[tuple[str, str]]:
    """Up to ``limit`` (id, name) of the devices ``principal`` may see whose name starts with
    ``prefix``: the suggestions of a search form's device field (thousands of devices do not
    fit in one select)."""
    member = None if _sees_all(principal) else principal.user_id or ""
    return await DeviceRepository(db).names_from(prefix, member_id=member, limit=limit)


async def groups_for(db: AsyncSession, devices: Iterable[Device]) -> dict[str, DeviceGroup]:
    """The groups of ``devices`` by id (for listing them with their group's name)."""
    return await DeviceRepository(db).groups_of({d.group_id for d in devices})


async def update_device(
    db: AsyncSession, *, actor: Actor, device_id: str, changes: Mapping[str, Any]
) -> Device:
    unknown = sorted(set(changes) - DEVICE_FIELDS)
    if unknown:
        raise ValidationFailed(f"unknown device field(s): {', '.join(unknown)}")
    if not changes:
        raise ValidationFailed(f"give at least one of: {', '.join(sorted(DEVICE_FIELDS))}")
    nulls = sorted(f for f in REQUIRED_DEVICE_FIELDS & set(changes) if changes[f] is None)
    if nulls:
        raise ValidationFailed(f"may not be null: {', '.join(nulls)}")
    device = await DeviceRepository(db).get(device_id)
    if device is None:
        raise NotFound(f"no device {device_id}")
    if "provider" in changes:
        _check_provider(changes["provider"])
    if "group_id" in changes:
        await _group_ref(db, changes["group_id"])
    provider = changes.get("provider", device.provider)
    provider_device_id = changes.get("provider_device_id", device.provider_device_id)
    await _unique_provider_id(db, provider, provider_device_id, device.id)
    diff = _apply(device, changes)
    if diff:
        try:
            await db.flush()
        except IntegrityError as exc:
            raise Conflict(
                f"{provider} device {provider_device_id!r} is already registered"
            ) from exc
        await record_event(
            db,
            EventType.device_updated,
            ticket=None,
            actor=actor,
            data={"device_id": device.id, "name": device.name, "changes": diff},
        )
    return device


async def get_device(db: AsyncSession, device_id: str) -> Device:
    device = await DeviceRepository(db).get(device_id)
    if device is None:
        raise NotFound(f"no device {device_id}")
    return device


async def retire_device(db: AsyncSession, *, actor: Actor, device_id: str) -> Device:
    """Mark a device retired (its agent key is revoked by ``broker.flows.devices``): it stays
    for its sessions' audit trail but takes no new sessions. Retiring twice is a conflict."""
    device = await get_device(db, device_id)
    if device.retired_at is not None:
        raise Conflict(f"device {device.name!r} is already retired")
    device.retired_at = utcnow()
    await db.flush()
    await record_event(
        db, EventType.device_retired, ticket=None, actor=actor, data=_device_data(device)
    )
    return device


def note_agent_version(device: Device, version: object) -> None:
    """Keep the version the device's agent reported in its hello (written when it changed)."""
    text = str(version)[:50] if isinstance(version, str) and version.strip() else None
    if text is not None and text != device.agent_version:
        device.agent_version = text


async def delete_device(db: AsyncSession, *, actor: Actor, device_id: str) -> None:
    """Remove a device. Only one that never had a session may go (``broker.flows.devices``
    checks; the sessions' foreign key would refuse the others anyway)."""
    device = await get_device(db, device_id)
    data = _device_data(device)
    await db.delete(device)
    await db.flush()
    await record_event(db, EventType.device_deleted, ticket=None, actor=actor, data=data)
