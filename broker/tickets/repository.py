"""SQL for tickets."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, or_, select

from broker.db.repository import Repository
from broker.tickets.models import Ticket


@dataclass(frozen=True)
class TicketFilter:
    system: str | None = None
    state: str | None = None
    q: str | None = None  # substring of the external id, subject, requester or assignee


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class TicketRepository(Repository[Ticket]):
    model = Ticket

    async def by_ref(self, system: str, external_id: str) -> Ticket | None:
        return await self.db.scalar(
            select(Ticket).where(Ticket.system == system, Ticket.external_id == external_id)
        )

    @staticmethod
    def _where(filters: TicketFilter) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if filters.system is not None:
            where.append(Ticket.system == filters.system)
        if filters.state is not None:
            where.append(func.lower(Ticket.state) == filters.state.lower())
        if filters.q:
            pattern = _like(filters.q)
            where.append(
                or_(
                    *(
                        func.lower(column).like(pattern, escape="\\")
                        for column in (
                            Ticket.external_id,
                            Ticket.subject,
                            Ticket.requester,
                            Ticket.assignee,
                        )
                    )
                )
            )
        return where

    async def search(self, filters: TicketFilter, *, limit: int, offset: int) -> list[Ticket]:
        stmt = (
            select(Ticket)
            .where(*self._where(filters))
            .order_by(Ticket.created_at.desc(), Ticket.id)
            .limit(limit)
            .offset(offset)
        )
        return await self.scalars(stmt)

    async def count(self, filters: TicketFilter) -> int:
        stmt = select(func.count()).select_from(Ticket).where(*self._where(filters))
        return int(await self.db.scalar(stmt) or 0)
