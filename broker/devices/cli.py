"""``supportbroker device add|list`` and ``supportbroker group add|add-member``.

Input is parsed through the same schemas as the API (so the same text rules apply) and
changed through the same service functions (so the same audit events are written), acting
as the console operator.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.permissions import grants_for
from broker.auth.principal import Principal
from broker.devices import service
from broker.devices.repository import DeviceFilter
from broker.devices.schemas import DeviceCreate, DeviceOut, GroupCreate
from broker.errors import NotFound, ValidationFailed
from broker.evidence.service import Actor

CLI_ACTOR = Actor(kind="system", name="cli")
# Listing at the console reads like an auditor: everything, changing nothing.
OPERATOR = Principal(kind="user", role="auditor", name="cli operator", scopes=grants_for("auditor"))

ModelT = TypeVar("ModelT", bound=BaseModel)


def _parse(model: type[ModelT], values: dict[str, Any], flags: dict[str, str]) -> ModelT:
    """Validate like the API does; errors name the command-line flag, not the field."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first.get("loc") else ""
        raise ValidationFailed(f"{flags.get(field, field)}: {first.get('msg', 'invalid')}") from exc


def register(subparsers: Any) -> None:
    device = subparsers.add_parser("device", help="devices")
    dsub = device.add_subparsers(dest="device_command", required=True, metavar="ACTION")
    add = dsub.add_parser("add", help="register a device in a group")
    add.add_argument("name")
    add.add_argument("--group", required=True, help="device group name (or id)")
    add.add_argument("--create-group", action="store_true", help="create the group if missing")
    add.add_argument(
        "--provider", required=True, help=f"one of: {', '.join(service.known_providers())}"
    )
    add.add_argument("--provider-id", required=True, help="the device's id at the provider")
    add.add_argument("--asset-tag")
    add.add_argument("--owner", help="the end user's name")
    add.add_argument("--contact", help="the end user's e-mail or phone")
    add.set_defaults(handler=add_device)

    lst = dsub.add_parser("list", help="list devices by name")
    lst.add_argument("--group", help="only this group (name or id)")
    lst.add_argument("--provider")
    lst.add_argument("--limit", type=int, default=100)
    lst.add_argument("--json", action="store_true", help="one JSON document on stdout")
    lst.set_defaults(handler=list_devices)

    group = subparsers.add_parser("group", help="device groups")
    gsub = group.add_subparsers(dest="group_command", required=True, metavar="ACTION")
    gadd = gsub.add_parser("add", help="create a device group")
    gadd.add_argument("name")
    gadd.add_argument("--description", default="")
    gadd.add_argument(
        "--unattended", action="store_true", help="allow unattended sessions on its devices"
    )
    gadd.set_defaults(handler=add_group)

    member = gsub.add_parser("add-member", help="let a technician serve a group's devices")
    member.add_argument("group", help="device group name (or id)")
    member.add_argument("username")
    member.set_defaults(handler=add_member)


async def add_group(db: AsyncSession, args: argparse.Namespace) -> int:
    body = _parse(
        GroupCreate,
        {"name": args.name, "description": args.description, "unattended_allowed": args.unattended},
        {"name": "NAME", "description": "--description"},
    )
    group = await service.create_group(db, actor=CLI_ACTOR, **body.model_dump())
    policy = "unattended allowed" if group.unattended_allowed else "consent required"
    print(f"created device group {group.name} ({group.id}, {policy})")
    return 0


async def add_member(db: AsyncSession, args: argparse.Namespace) -> int:
    group, user, added = await service.add_member_by_name(
        db, actor=CLI_ACTOR, group=args.group, username=args.username
    )
    if added:
        print(f"{user.username} is now a member of {group.name}")
    else:
        print(f"{user.username} was already a member of {group.name}")
    return 0


async def add_device(db: AsyncSession, args: argparse.Namespace) -> int:
    values = {
        "name": args.name,
        "group_id": "-",  # resolved below, once the input is known to be good
        "provider": args.provider,
        "provider_device_id": args.provider_id,
        "asset_tag": args.asset_tag,
        "owner_name": args.owner,
        "owner_contact": args.contact,
    }
    flags = {
        "name": "NAME",
        "provider": "--provider",
        "provider_device_id": "--provider-id",
        "asset_tag": "--asset-tag",
        "owner_name": "--owner",
        "owner_contact": "--contact",
    }
    body = _parse(DeviceCreate, values, flags)
    created = ""
    try:
        group = await service.find_group(db, args.group)
    except NotFound:
        if not args.create_group:
            raise NotFound(
                f"no device group named {args.group!r}; create it with "
                f"'supportbroker group add' or pass --create-group"
            ) from None
        name = _parse(GroupCreate, {"name": args.group}, {"name": "--group"}).name
        group = await service.create_group(db, actor=CLI_ACTOR, name=name)
        created = f" (new group {group.id})"
    fields = {**body.model_dump(), "group_id": group.id}
    device = await service.create_device(db, actor=CLI_ACTOR, **fields)
    print(
        f"added device {device.name} ({device.id}) to {group.name}{created} via {device.provider}"
    )
    return 0


async def list_devices(db: AsyncSession, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 500:
        raise ValidationFailed("--limit must be between 1 and 500")
    group_id = (await service.find_group(db, args.group)).id if args.group else None
    filters = DeviceFilter(group_id=group_id, provider=args.provider)
    items, total = await service.list_devices(db, OPERATOR, filters, limit=args.limit, offset=0)
    groups = await service.groups_for(db, items)
    rows = [DeviceOut.of(d, groups[d.group_id]).model_dump(mode="json") for d in items]
    if args.json:
        print(json.dumps({"items": rows, "total": total}, indent=2))
        return 0
    if not rows:
        print("no devices")
        return 0
    print(f"{'ID':36}  {'NAME':24}  {'GROUP':20}  {'PROVIDER':12}  PROVIDER ID")
    for row in rows:
        print(
            f"{row['id']:36}  {row['name'][:24]:24}  {row['group']['name'][:20]:20}  "
            f"{row['provider'][:12]:12}  {row['provider_device_id']}"
        )
    if total > len(rows):
        print(f"({len(rows)} of {total}; use --limit)")
    return 0
