"""A ticket's end ends its sessions: closed or reassigned, by the API or by its system.

The tickets and connectors services change and audit the ticket (``ticket.closed``,
``ticket.reassigned``) and say whether its sessions must end; the sessions service then
ends every open one (active → ended, awaiting consent / approved → revoked, requested →
failed), each move audited, commented and withdrawing provider access like any other.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.principal import Principal
from broker.connectors import service as connectors
from broker.evidence.events import EventType
from broker.sessions import service as sessions
from broker.tickets import service as tickets
from broker.tickets.models import Ticket
from broker.tickets.schemas import TicketUpdate

log = structlog.get_logger("broker.flows")


async def update_ticket(
    db: AsyncSession, principal: Principal, system: str, external_id: str, body: TicketUpdate
) -> Ticket:
    """Change a ticket through the API; closing it ends its open sessions."""
    ticket, event = await tickets.update_ticket(db, principal, system, external_id, body)
    if event is EventType.ticket_closed:
        actor = principal.actor()
        await sessions.end_sessions_for_ticket(db, ticket, actor=actor, why="ticket closed")
    return ticket


async def apply_webhook(
    db: AsyncSession, system: str, headers: Mapping[str, str], body: bytes
) -> list[str]:
    """A ticket system's verified webhook; a ticket it closed or reassigned ends its open
    sessions. Returns the ids of the tickets it changed."""
    changed = await connectors.handle_webhook(db, system, headers, body)
    for applied in changed:
        if applied.ends_sessions is None:
            continue
        ticket = applied.ticket
        actor = connectors.system_actor(ticket.system)
        ended = await sessions.end_sessions_for_ticket(
            db, ticket, actor=actor, why=applied.ends_sessions
        )
        if ended:
            log.info("connectors.sessions_ended", ticket=ticket.ref, count=len(ended))
    return [applied.ticket.id for applied in changed]
