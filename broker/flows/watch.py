"""The slow poll of tickets whose sessions are running: the webhooks' fallback.

Each run reads which tickets have open sessions and are due a look (their system's
``watch_interval_seconds``) in a short transaction, asks each ticket's system with no
transaction open, and applies the answer in a new one, exactly as a notification would be
applied (``source: poll``): a ticket its system now says is closed, merged or in other hands
ends the sessions concerned, with the reason sealed (``broker.flows.tickets``). A ticket its
system no longer knows (404) ends its sessions too; a system that cannot be asked (down,
timing out) changes nothing, the failure is recorded on the watch row and retried next time.
osTicket, which sends no webhooks, is watched this way only (with its API Endpoints plugin).
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.connectors import service as connectors
from broker.connectors import watch
from broker.connectors.changes import Applied, event_from_info
from broker.db.aftercommit import commit
from broker.db.base import utcnow
from broker.errors import BrokerError, NotFound
from broker.flows.tickets import end_what_it_ends
from broker.sessions import service as sessions
from broker.tickets.models import Ticket

log = structlog.get_logger("broker.flows")


@dataclass(frozen=True)
class _Due:
    ticket_id: str
    system: str
    external_id: str


async def watch_tickets(maker: async_sessionmaker[AsyncSession]) -> int:
    """Look at the tickets that are due; returns how many sessions this ended."""
    now = utcnow()
    async with maker() as db:
        tickets = await sessions.tickets_with_open_sessions(db)
        due = [_Due(t.id, t.system, t.external_id) for t in await watch.due(db, tickets, now)]
        await commit(db)
    ended = 0
    for item in due:
        async with maker() as db:
            ended += await _look(db, item)
    return ended


async def _look(db: AsyncSession, item: _Due) -> int:
    gone = False
    error: str | None = None
    try:
        info = await watch.lookup(db, item.system, item.external_id)  # no transaction open
    except NotFound:
        gone = True
    except BrokerError as exc:  # recorded on the watch row and tried again next time
        error = exc.detail
        log.warning("connectors.watch_failed", ticket=f"{item.system}:{item.external_id}")
    ended: list[str] = []
    ticket = await db.get(Ticket, item.ticket_id)
    if ticket is not None and error is None:
        if gone:
            why = f"ticket no longer exists in {item.system}"
            applied = Applied(ticket, ends=why)
        else:
            changed = await connectors.apply_to_ticket(db, item.system, event_from_info(info))
            applied = changed[0] if changed else Applied(ticket)
        ended = await end_what_it_ends(db, applied)
    await watch.checked(db, item.ticket_id, utcnow(), error)
    await commit(db)
    return len(ended)
