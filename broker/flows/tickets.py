"""A ticket's end ends its sessions: closed, merged or reassigned, by the API, by its
system's notification or by the slow poll that watches tickets with running sessions.

The tickets and connectors services change and audit the ticket (``ticket.closed``,
``ticket.merged``, ``ticket.reassigned``) and say what the change means; the sessions
service then ends the open sessions concerned (active → ended, awaiting consent / approved
→ revoked, requested → failed), each move audited with the reason, commented and
withdrawing provider access like any other. A closed or merged ticket ends them all; a
ticket that changed hands ends those whose technician it no longer belongs to (another
person has it, or it moved to a group that is not one of theirs through ``group_map``).
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.principal import Principal
from broker.connectors import service as connectors
from broker.connectors.changes import Applied, still_theirs
from broker.devices import service as devices
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
    """A ticket system's verified notification; returns the ids of the tickets it changed."""
    changed = await connectors.handle_webhook(db, system, headers, body)
    for applied in changed:
        await end_what_it_ends(db, applied)
    return [applied.ticket.id for applied in changed]


async def end_what_it_ends(db: AsyncSession, applied: Applied) -> list[str]:
    """End the open sessions a change of their ticket ends; returns their ids."""
    ticket = applied.ticket
    actor = connectors.system_actor(ticket.system)
    if applied.ends is not None:
        ended = await sessions.end_sessions_for_ticket(db, ticket, actor=actor, why=applied.ends)
    elif applied.handover is not None:
        handover = applied.handover
        config = connectors.config_of(db, ticket.system)
        away: list[str] = []
        for record in await sessions.open_sessions_for_ticket(db, ticket):
            tech = record.technician
            names = [n for n in (tech.username, tech.display_name, tech.email) if n]
            groups = await devices.group_names_of_user(db, tech.id)
            if not still_theirs(config, handover, names, groups):
                away.append(record.session.id)
        ended = (
            await sessions.end_sessions_for_ticket(
                db, ticket, actor=actor, why=handover.why, only=away
            )
            if away
            else []
        )
    else:
        return []
    if ended:
        log.info("connectors.sessions_ended", ticket=ticket.ref, count=len(ended))
    return ended
