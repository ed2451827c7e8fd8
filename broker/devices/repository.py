"""SQL for device groups, devices and group membership."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, event, func, or_, select
from sqlalchemy.orm import Session

from broker.auth.models import User
from broker.db.repository import Repository
from broker.db.session import BrokerSession
from broker.devices.models import Device, DeviceGroup, GroupMember


@dataclass(frozen=True)
class DeviceFilter:
    group_id: str | None = None
    provider: str | None = None
    q: str | None = None  # substring of name, provider id, asset tag, owner name
    # The ids of online devices (the gateway's presence, as a subquery) and whether to keep
    # those (True) or the others (False); None: either.
    online: bool | None = None
    online_ids: Select[str] | None = None
    retired: bool | None = False  # None: retired and active alike


# db.info key: a transaction's answers of GroupRepository.visible_to for members.
MEMBER_GROUPS = "devices.member_groups"


@event.listens_for(BrokerSession, "after_transaction_end")
def _forget_member_groups(session: Session, _transaction: Any) -> None:
    # Kept for one transaction only: the next one may see memberships changed meanwhile.
    session.info.pop(MEMBER_GROUPS, None)


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class GroupRepository(Repository[DeviceGroup]):
    model = DeviceGroup

    async def is_member(self, group_id: str, user_id: str) -> bool:
        found = await self.db.scalar(
            select(GroupMember.user_id).where(
                GroupMember.group_id == group_id, GroupMember.user_id == user_id
            )
        )
        return found is not None

    async def by_name(self, name: str) -> DeviceGroup | None:
        return await self.db.scalar(select(DeviceGroup).where(DeviceGroup.name == name))

    async def visible_to(self, user_id: str | None) -> list[DeviceGroup]:
        """Every group (``user_id`` None) or the groups ``user_id`` is a member of.

        A member's groups are kept for the rest of the transaction (until a membership
        changes in it): a session request asks three times (may the technician see the
        device, its group, what the ticket check compares) and this answers with one
        statement."""
        memo: dict[str, list[DeviceGroup]] = self.db.info.setdefault(MEMBER_GROUPS, {})
        if user_id is not None and user_id in memo:
            return list(memo[user_id])
        stmt = select(DeviceGroup).order_by(DeviceGroup.name)
        if user_id is not None:
            stmt = stmt.join(GroupMember, GroupMember.group_id == DeviceGroup.id).where(
                GroupMember.user_id == user_id
            )
        groups = await self.scalars(stmt)
        if user_id is not None:
            memo[user_id] = list(groups)
        return groups

    async def members(self, group_id: str) -> list[User]:
        stmt = (
            select(User)
            .join(GroupMember, GroupMember.user_id == User.id)
            .where(GroupMember.group_id == group_id)
            .order_by(User.username)
        )
        return list((await self.db.scalars(stmt)).all())

    async def add_member(self, group_id: str, user_id: str) -> None:
        self.db.info.pop(MEMBER_GROUPS, None)
        self.db.add(GroupMember(group_id=group_id, user_id=user_id))
        await self.db.flush()

    async def remove_member(self, group_id: str, user_id: str) -> None:
        self.db.info.pop(MEMBER_GROUPS, None)
        await self.db.execute(
            delete(GroupMember).where(
                GroupMember.group_id == group_id, GroupMember.user_id == user_id
            )
        )


class DeviceRepository(Repository[Device]):
    model = Device

    async def visible_to(self, user_id: str | None) -> list[Device]:
        stmt = select(Device).order_by(Device.name)
        if user_id is not None:
            stmt = stmt.join(GroupMember, GroupMember.group_id == Device.group_id).where(
                GroupMember.user_id == user_id
            )
        return await self.scalars(stmt)

    async def by_provider_id(self, provider: str, provider_device_id: str) -> Device | None:
        return await self.db.scalar(
            select(Device).where(
                Device.provider == provider, Device.provider_device_id == provider_device_id
            )
        )

    @staticmethod
    def _where(filters: DeviceFilter, member_id: str | None) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if member_id is not None:
            where.append(
                Device.group_id.in_(
                    select(GroupMember.group_id).where(GroupMember.user_id == member_id)
                )
            )
        if filters.group_id is not None:
            where.append(Device.group_id == filters.group_id)
        if filters.provider is not None:
            where.append(Device.provider == filters.provider)
        if filters.online is not None and filters.online_ids is not None:
            inside = Device.id.in_(filters.online_ids)
            where.append(inside if filters.online else ~inside)
        if filters.retired is not None:
            where.append(
                Device.retired_at.is_not(None) if filters.retired else Device.retired_at.is_(None)
            )
        if filters.q:
            pattern = _like(filters.q)
            columns = (Device.name, Device.provider_device_id, Device.asset_tag, Device.owner_name)
            where.append(or_(*(func.lower(c).like(pattern, escape="\\") for c in columns)))
        return where

    async def search(
        self, filters: DeviceFilter, *, member_id: str | None, limit: int, offset: int
    ) -> list[Device]:
        """Devices matching ``filters``; only those in ``member_id``'s groups when given."""
        stmt = (
            select(Device)
            .where(*self._where(filters, member_id))
            .order_by(Device.name, Device.id)
            .limit(limit)
            .offset(offset)
        )
        return await self.scalars(stmt)

    async def names_from(
        self, prefix: str, *, member_id: str | None, limit: int
    ) -> list[tuple[str, str]]:
        """(id, name) of devices whose name starts with ``prefix`` (as typed, case kept), by
        name: a range on the unique name index, so a form's suggestions never scan the
        devices table (a LIKE with a leading pattern would on PostgreSQL's default collation)."""
        where = self._where(DeviceFilter(), member_id)
        if prefix:
            where += [Device.name >= prefix, Device.name < prefix + "\U0010ffff"]
        stmt = select(Device.id, Device.name).where(*where).order_by(Device.name).limit(limit)
        return [(str(i), str(n)) for i, n in (await self.db.execute(stmt)).all()]

    async def count(self, filters: DeviceFilter, *, member_id: str | None) -> int:
        stmt = select(func.count()).select_from(Device).where(*self._where(filters, member_id))
        return int(await self.db.scalar(stmt) or 0)

    async def groups_of(self, group_ids: set[str]) -> dict[str, DeviceGroup]:
        if not group_ids:
            return {}
        rows = await self.db.scalars(select(DeviceGroup).where(DeviceGroup.id.in_(group_ids)))
        return {g.id: g for g in rows}
