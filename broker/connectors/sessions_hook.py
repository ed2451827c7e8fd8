"""Ending a ticket's open sessions when its system reports it closed or reassigned.

The sessions domain owns session state: this hands the work to
``broker.sessions.service.end_sessions_for_ticket`` (active → ended, awaiting consent /
approved → revoked, requested → failed, each move audited by the state machine). The import
is deferred because the sessions domain itself calls the connectors service.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from broker.evidence.service import Actor
from broker.tickets.models import Ticket


async def end_ticket_sessions(
    db: AsyncSession, ticket: Ticket, *, actor: Actor, why: str
) -> list[str]:
    """End every open session of ``ticket``; returns the ids of the sessions it moved."""
    from broker.sessions.service import end_sessions_for_ticket

    return await end_sessions_for_ticket(db, ticket, actor=actor, why=why)
