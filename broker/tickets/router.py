"""The tickets API (thin: parse, authorise, call one service function).

- ``POST /tickets`` (tickets:write) → 201; an existing ``system`` + ``external_id`` → 409
- ``GET /tickets`` (tickets:read) filters ``system``, ``state``, ``q`` (substring of id,
  subject, requester, assignee), ``limit``/``offset``; newest first, with ``total``
- ``GET /tickets/{system}/{external_id}`` (tickets:read)
- ``PATCH /tickets/{system}/{external_id}`` (tickets:write): subject, state, assignee

Ticket-system tokens only reach their own system's tickets (403 otherwise).
``external_id`` may contain ``/`` (it is the rest of the path).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from broker.auth.deps import require
from broker.auth.permissions import Scope
from broker.auth.principal import Principal
from broker.db.session import DbSession
from broker.flows import tickets
from broker.tickets import service
from broker.tickets.repository import TicketFilter
from broker.tickets.schemas import TicketCreate, TicketList, TicketOut, TicketUpdate

router = APIRouter(prefix="/tickets", tags=["tickets"])
# Past any real list, and within a 64-bit integer on PostgreSQL (a larger one was a 500).
MAX_OFFSET = 2**31 - 1
Reader = Annotated[Principal, Depends(require(Scope.tickets_read))]
Writer = Annotated[Principal, Depends(require(Scope.tickets_write))]


@router.post("", status_code=201)
async def create(body: TicketCreate, principal: Writer, db: DbSession) -> TicketOut:
    return TicketOut.of(await service.create_ticket(db, principal, body))


@router.get("")
async def list_(
    *,
    principal: Reader,
    db: DbSession,
    system: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$")] = None,
    state: Annotated[str | None, Query(pattern=r"^[A-Za-z][A-Za-z0-9 _-]{0,29}$")] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> TicketList:
    filters = TicketFilter(system=system, state=state, q=q)
    items, total = await service.list_tickets(db, principal, filters, limit=limit, offset=offset)
    return TicketList(
        items=[TicketOut.of(t) for t in items], total=total, limit=limit, offset=offset
    )


@router.get("/{system}/{external_id:path}")
async def get(system: str, external_id: str, principal: Reader, db: DbSession) -> TicketOut:
    return TicketOut.of(await service.get_ticket(db, principal, system, external_id))


@router.patch("/{system}/{external_id:path}")
async def update(
    system: str, external_id: str, body: TicketUpdate, principal: Writer, db: DbSession
) -> TicketOut:
    return TicketOut.of(await tickets.update_ticket(db, principal, system, external_id, body))
