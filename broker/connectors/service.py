"""Connector logic the rest of the broker calls: look up, queue comments, take webhooks.

- :func:`lookup_for_session` gates a session request on the ticket (exists, open, and
  assigned to the technician where the system's config asks for it).
- :func:`enqueue_ticket_comment` queues a comment in the caller's transaction.
- :func:`handle_webhook` applies a verified ``ticket.*`` webhook to our ticket and audits
  it; it says when the ticket's open sessions must end (closed or reassigned), which
  ``broker.flows.tickets`` then does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from broker.connectors import outbox
from broker.connectors.base import OUTBOUND_EVENTS, TicketInfo, WebhookEvent
from broker.connectors.models import OutboxMessage
from broker.connectors.registry import registry_for
from broker.connectors.repository import OutboxRepository, WebhookDeliveryRepository
from broker.connectors.settings import ConnectorConfig
from broker.db.base import utcnow
from broker.errors import BrokerError, Conflict, NotAuthenticated, PolicyDenied, ValidationFailed
from broker.evidence.events import EventType
from broker.evidence.service import Actor, record_event
from broker.tickets.models import Ticket
from broker.tickets.repository import TicketRepository

log = structlog.get_logger("broker.connectors")
# The audit event each verified webhook becomes (a connector only admits INBOUND_EVENTS).
INBOUND_AUDIT: dict[str, EventType] = {
    "ticket.updated": EventType.ticket_updated,
    "ticket.closed": EventType.ticket_closed,
    "ticket.reassigned": EventType.ticket_reassigned,
}


@dataclass(frozen=True)
class Applied:
    """A webhook applied to our ticket. ``ends_sessions``: why the ticket's open sessions
    must end now (it closed or changed hands), None when they go on."""

    ticket: Ticket
    ends_sessions: str | None


def system_actor(system: str) -> Actor:
    return Actor(kind="ticket_system", name=system)


async def lookup_for_session(
    db: AsyncSession,
    system: str,
    external_id: str,
    *,
    technician: Iterable[str] = (),
    technician_groups: Iterable[str] = (),
    require_open: bool = True,
) -> TicketInfo:
    """The ticket as its system sees it; refuses (PolicyDenied) a closed or foreign ticket.

    ``technician``: the names the technician is known by (login, display name, e-mail),
    checked against the assignee when the system's config sets ``require_assignee``;
    ``technician_groups``: the names of their groups, checked against the ticket's group
    when the config also sets ``accept_group``. Raises NotFound for an unknown ticket and
    ConnectorError when the system fails.
    """
    external_id = external_id.strip()
    if not external_id:
        raise ValidationFailed("the ticket number is empty")
    connector = registry_for(db).get(system)
    info = await connector.lookup_ticket(external_id)
    ticket = await TicketRepository(db).by_ref(system, external_id)
    if ticket is not None:
        if info.verified:
            sync_ticket(ticket, info)
        elif not ticket.is_open:
            # Taken as typed, but a webhook told us it closed: believe the webhook.
            info = replace(info, state="closed", raw_state=ticket.state)
    if require_open and not info.is_open:
        raise PolicyDenied(f"ticket {info.ref} is {info.raw_state or 'closed'}; reopen it first")
    config = getattr(connector, "config", None)
    if isinstance(config, ConnectorConfig) and config.require_assignee:
        check_assignment(info, config, technician, technician_groups)
    return info


def _folded(names: Iterable[str]) -> set[str]:
    return {n.strip().casefold() for n in names if n and n.strip()}


def check_assignment(
    info: TicketInfo,
    config: ConnectorConfig,
    technician: Iterable[str],
    technician_groups: Iterable[str] = (),
) -> None:
    """Refuse (PolicyDenied) a ticket that is not the technician's to work on.

    Theirs: assigned to them in person, or (``accept_group``) assigned to nobody in person
    and to one of their groups (the system's group translated through ``group_map``).
    """
    assignee = (info.assignee or "").strip()
    if assignee and assignee.casefold() in _folded(technician):
        return
    if config.accept_group and not assignee and info.group:
        ours = config.group_map.get(info.group, info.group)
        if ours.strip().casefold() in _folded(technician_groups):
            return
        raise PolicyDenied(
            f"ticket {info.ref} is assigned to group {info.group!r}, which is not one of yours"
        )
    raise PolicyDenied(f"ticket {info.ref} is assigned to {assignee or 'nobody'}, not to you")


def sync_ticket(ticket: Ticket, info: TicketInfo) -> None:
    """Copy what the ticket's system says (a verified lookup) onto our ticket row."""
    ticket.subject = info.subject[:500] or ticket.subject
    ticket.requester = info.requester[:200] or ticket.requester
    ticket.state = info.state
    ticket.assignee = info.assignee
    ticket.url = info.url or ticket.url


async def enqueue_ticket_comment(
    db: AsyncSession,
    ticket: Ticket,
    event_type: str,
    text: str,
    data: Mapping[str, Any] | None = None,
) -> OutboxMessage | None:
    """Queue ``text`` for ``ticket``'s system in the current transaction.

    Returns None (nothing queued) when the system takes no comments (standalone, osTicket,
    a webhook without outbound URL). ``data`` goes to webhook receivers as is: keep it to
    ids and facts, never secrets.
    """
    if event_type not in OUTBOUND_EVENTS:
        raise ValidationFailed(
            f"unknown outbound event {event_type!r}; one of {', '.join(sorted(OUTBOUND_EVENTS))}"
        )
    connector = registry_for(db).get(ticket.system)
    if not connector.can_comment:
        return None
    return await outbox.enqueue(
        db,
        system=ticket.system,
        external_id=ticket.external_id,
        event_type=event_type,
        text=text,
        data=dict(data or {}),
    )


async def handle_webhook(
    db: AsyncSession, system: str, headers: Mapping[str, str], body: bytes
) -> list[Applied]:
    """Verify and apply an inbound webhook; returns what it did to which of our tickets."""
    connector = registry_for(db).get(system)
    try:
        event = connector.verify_webhook(headers, body)
    except NotAuthenticated as exc:
        await record_event(
            db,
            EventType.connector_webhook_rejected,
            ticket=None,
            actor=system_actor(system),
            data={"system": system, "why": exc.detail},
        )
        raise NotAuthenticated(exc.detail, keep_changes=True) from exc
    deliveries = WebhookDeliveryRepository(db)
    now = utcnow()
    window = timedelta(
        seconds=getattr(getattr(connector, "config", None), "replay_window_seconds", 300)
    )
    await deliveries.forget_before(now - 2 * window)
    if not await deliveries.remember(system, event.delivery_id, now):
        raise Conflict(f"webhook delivery {event.delivery_id!r} was already received")
    ticket = await TicketRepository(db).by_ref(system, event.external_id)
    if ticket is None:
        log.info("connectors.webhook_unknown_ticket", system=system, event_type=event.event_type)
        return []
    return [await _apply(db, ticket, event)]


async def _apply(db: AsyncSession, ticket: Ticket, event: WebhookEvent) -> Applied:
    before = {"state": ticket.state, "assignee": ticket.assignee}
    closing = event.event_type == "ticket.closed" or (
        event.state is not None and event.state.lower() in _closed_words(db, ticket.system)
    )
    # An update naming a new assignee is a reassignment only if we knew the old one.
    reassigned = event.event_type == "ticket.reassigned" or (
        event.assignee is not None
        and ticket.assignee is not None
        and event.assignee != ticket.assignee
    )
    if closing:
        ticket.state = "closed"
    elif event.state is not None:
        ticket.state = "open"
    if event.assignee is not None or event.event_type == "ticket.reassigned":
        ticket.assignee = event.assignee
    await record_event(
        db,
        INBOUND_AUDIT[event.event_type],
        ticket=ticket.ref,
        actor=system_actor(ticket.system),
        data={
            "delivery_id": event.delivery_id,
            "before": before,
            "after": {"state": ticket.state, "assignee": ticket.assignee},
        },
    )
    if closing or reassigned:
        why = "ticket closed" if closing else f"ticket reassigned to {ticket.assignee or 'nobody'}"
        return Applied(ticket, why)
    return Applied(ticket, None)


def _closed_words(db: AsyncSession, system: str) -> frozenset[str]:
    connector = registry_for(db).get(system)
    closed = getattr(connector, "closed_states", None)
    words = closed() if callable(closed) else frozenset()
    return frozenset({"closed", *words})


async def outbox_overview(db: AsyncSession) -> dict[str, int]:
    return await OutboxRepository(db).pending_by_system()


async def connectors_status(db: AsyncSession) -> list[dict[str, Any]]:
    """Each configured system: its kind, what it can do, reachability, queued messages."""
    registry = registry_for(db)
    pending = await OutboxRepository(db).pending_by_system()
    rows: list[dict[str, Any]] = []
    for system in registry.systems():
        connector = registry.get(system)
        try:
            status, reachable = await connector.check(), True
        except BrokerError as exc:  # reported to the admin, not raised: others still listed
            status, reachable = exc.detail, False
        rows.append(
            {
                "system": system,
                "kind": connector.kind,
                "can_lookup": connector.can_lookup,
                "can_comment": connector.can_comment,
                "reachable": reachable,
                "status": status,
                "pending_messages": pending.get(system, 0),
            }
        )
    return rows
