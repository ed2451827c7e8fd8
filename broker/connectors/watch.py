"""The slow poll: tickets whose sessions are running are looked up now and then.

A desk's notification may never come (a webhook not set up, a delivery lost after its
retries, osTicket which sends none), so a ticket with open sessions is asked for again
every ``watch_interval_seconds`` of its system (0: never); what the lookup says is applied
like a notification (``source: poll``). This module picks the tickets that are due and
records each look (``connector_ticket_watch``); ``broker.flows.watch`` runs the job, asking
each system with no transaction open. A system that cannot be asked (down, or standalone)
changes nothing: an unchecked ticket never ends a session.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.connectors.base import TicketInfo
from broker.connectors.models import TicketWatch
from broker.connectors.registry import ConnectorRegistry, registry_for
from broker.tickets.models import Ticket


def interval(registry: ConnectorRegistry, system: str) -> timedelta | None:
    """How often ``system``'s tickets are looked at; None: not watched."""
    if not registry.is_configured(system):
        return None
    connector = registry.get(system)
    seconds = getattr(getattr(connector, "config", None), "watch_interval_seconds", 0)
    if not connector.can_lookup or not seconds:
        return None
    return timedelta(seconds=seconds)


async def due(db: AsyncSession, tickets: Sequence[Ticket], now: datetime) -> list[Ticket]:
    """Which of ``tickets`` (those with open sessions) should be looked up now."""
    registry = registry_for(db)
    ids = [t.id for t in tickets]
    seen = {
        w.ticket_id: w.checked_at
        for w in (await db.scalars(select(TicketWatch).where(TicketWatch.ticket_id.in_(ids))))
    }
    found: list[Ticket] = []
    for ticket in tickets:
        every = interval(registry, ticket.system)
        last = seen.get(ticket.id)
        if every is not None and (last is None or last <= now - every):
            found.append(ticket)
    return found


async def lookup(db: AsyncSession, system: str, external_id: str) -> TicketInfo:
    """Ask ``system`` about the ticket (call it with no transaction open)."""
    return await registry_for(db).get(system).lookup_ticket(external_id)


async def checked(db: AsyncSession, ticket_id: str, now: datetime, error: str | None) -> None:
    """Record a look at the ticket (and the error, when its system could not be asked)."""
    row = await db.get(TicketWatch, ticket_id)
    if row is None:
        row = TicketWatch(ticket_id=ticket_id, checked_at=now, failures=0)
        db.add(row)
    row.checked_at = now
    row.last_error = error[:500] if error else None
    row.failures = row.failures + 1 if error else 0
    await db.flush()
