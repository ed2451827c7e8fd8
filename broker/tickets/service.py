"""Tickets: created by API clients and ticket systems, or (standalone) taken as typed before a
session is requested; read, searched and updated.

A ticket-system token (``Principal.ticket_system``) acts only on its own system's tickets;
trying another system is refused and audited. Closing a ticket through the API ends its open
sessions, as a "closed" webhook from the ticket system does: ``broker.flows.tickets``.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.principal import Principal
from broker.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from broker.evidence.events import EventType
from broker.evidence.service import ERASED_TEXT, Actor, record_event
from broker.logging import bind_ids
from broker.tickets.models import Ticket
from broker.tickets.repository import TicketFilter, TicketRepository
from broker.tickets.schemas import (
    TicketCreate,
    TicketId,
    TicketSystem,
    TicketUpdate,
    clean_text,
)

_SYSTEM = TypeAdapter(TicketSystem)
_EXTERNAL_ID = TypeAdapter(TicketId)


async def ensure_ticket(
    db: AsyncSession,
    *,
    system: str,
    external_id: str,
    actor: Actor,
    subject: str | None = None,
    requester: str | None = None,
    source: str = "standalone",
) -> Ticket:
    """The ticket ``system:external_id``; standalone, a missing one is created as typed.

    ``source`` goes into the ``ticket.created`` audit record: who vouched for the ticket
    (``connector:<system>`` after a verified lookup, ``standalone`` when taken as typed).

    Whether it is open is the caller's rule to apply (``Ticket.is_open``).
    """
    repo = TicketRepository(db)
    ticket = await repo.by_ref(system, external_id)
    if ticket is not None:
        return ticket
    ticket = await repo.add(
        Ticket(
            system=system,
            external_id=external_id,
            subject=subject or "",
            requester=requester or "",
            state="open",
        )
    )
    await record_event(
        db,
        EventType.ticket_created,
        ticket=ticket.ref,
        actor=actor,
        data={"subject": ticket.subject, "requester": ticket.requester, "source": source},
    )
    return ticket


def check_ref(system: str, external_id: str) -> tuple[str, str]:
    """Validate a ticket reference taken from a URL with the same rules as a body."""
    try:
        return _SYSTEM.validate_python(system), _EXTERNAL_ID.validate_python(external_id)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValidationFailed(f"ticket reference: {first.get('msg', 'invalid')}") from exc


async def _own_system(db: AsyncSession, principal: Principal, system: str) -> None:
    """A ticket-system token may only touch its own system's tickets (refusal audited)."""
    if principal.ticket_system is None or principal.ticket_system == system:
        return
    await record_event(
        db,
        EventType.ticket_access_denied,
        ticket=None,
        actor=principal.actor(),
        data={"own_system": principal.ticket_system, "asked_system": system},
    )
    raise PermissionDenied(
        f"this token belongs to ticket system {principal.ticket_system!r} and may not act on "
        f"tickets of {system!r}",
        keep_changes=True,
    )


async def create_ticket(db: AsyncSession, principal: Principal, body: TicketCreate) -> Ticket:
    """A new ticket; one that already exists is a conflict (409), never silently merged."""
    await _own_system(db, principal, body.system)
    repo = TicketRepository(db)
    ref = f"{body.system}:{body.external_id}"
    bind_ids(ticket=ref)
    if await repo.by_ref(body.system, body.external_id) is not None:
        raise Conflict(f"ticket {ref} already exists; change it with PATCH instead")
    ticket = Ticket(
        system=body.system,
        external_id=body.external_id,
        subject=body.subject,
        requester=body.requester,
        state=body.state,
        url=body.url,
    )
    try:
        await repo.add(ticket)
    except IntegrityError as exc:  # a concurrent create won the unique constraint
        raise Conflict(f"ticket {ref} already exists; change it with PATCH instead") from exc
    await record_event(
        db,
        EventType.ticket_created,
        ticket=ticket.ref,
        actor=principal.actor(),
        data={
            "subject": ticket.subject,
            "requester": ticket.requester,
            "state": ticket.state,
            "url": ticket.url,
            "source": "api",
        },
    )
    return ticket


async def get_ticket(
    db: AsyncSession, principal: Principal, system: str, external_id: str
) -> Ticket:
    system, external_id = check_ref(system, external_id)
    bind_ids(ticket=f"{system}:{external_id}")
    await _own_system(db, principal, system)
    ticket = await TicketRepository(db).by_ref(system, external_id)
    if ticket is None:
        raise NotFound(f"no ticket {system}:{external_id}")
    return ticket


async def list_tickets(
    db: AsyncSession, principal: Principal, filters: TicketFilter, *, limit: int, offset: int
) -> tuple[list[Ticket], int]:
    """A page of tickets, newest first, and how many match in all."""
    if filters.q is not None:
        try:
            clean_text(filters.q)
        except ValueError as exc:
            raise ValidationFailed(f"q: {exc}") from exc
    if principal.ticket_system is not None:
        if filters.system is None:
            filters = TicketFilter(principal.ticket_system, filters.state, filters.q)
        await _own_system(db, principal, filters.system or principal.ticket_system)
    repo = TicketRepository(db)
    return await repo.search(filters, limit=limit, offset=offset), await repo.count(filters)


async def update_ticket(
    db: AsyncSession, principal: Principal, system: str, external_id: str, body: TicketUpdate
) -> tuple[Ticket, EventType | None]:
    """Change subject, state or assignee; the event (returned, None when nothing changed)
    says ``ticket.closed`` / ``.reopened`` when the change crosses between open and closed."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    if not changes:
        raise ValidationFailed("give at least one of: subject, state, assignee")
    for name in ("subject", "state"):
        if name in changes and changes[name] is None:
            raise ValidationFailed(f"{name}: may not be null")
    ticket = await get_ticket(db, principal, system, external_id)
    was_open = ticket.is_open
    diff: dict[str, Any] = {}
    for name, value in changes.items():
        before = getattr(ticket, name)
        if before != value:
            diff[name] = {"from": before, "to": value}
            setattr(ticket, name, value)
    if not diff:
        return ticket, None
    await db.flush()
    event = EventType.ticket_updated
    if was_open and not ticket.is_open:
        event = EventType.ticket_closed
    elif not was_open and ticket.is_open:
        event = EventType.ticket_reopened
    actor = principal.actor()
    await record_event(db, event, ticket=ticket.ref, actor=actor, data={"changes": diff})
    return ticket, event


async def forget_ticket(db: AsyncSession, system: str, external_id: str) -> Ticket | None:
    """Erasure: blank the ticket's personal data (subject, requester, assignee, group); the
    ids, state and times stay. None if the broker never knew the ticket (log only)."""
    ticket = await db.scalar(
        select(Ticket).where(Ticket.system == system, Ticket.external_id == external_id)
    )
    if ticket is not None:
        ticket.subject, ticket.requester = ERASED_TEXT, ""
        ticket.assignee = ticket.group_name = None
        await db.flush()
    return ticket
