"""Connector logic the rest of the broker calls: look up, queue comments, take webhooks.

- :func:`lookup_for_session` gates a session request on the ticket (exists, open, and
  assigned to the technician where the system's config asks for it).
- :func:`enqueue_ticket_comment` queues a comment in the caller's transaction.
- :func:`handle_webhook` takes a desk's notification (:mod:`~broker.connectors.intake`:
  authentication, freshness, replay, refusals kept), applies it to our ticket and audits
  it (:mod:`~broker.connectors.changes`); it says what that means for the ticket's open
  sessions, which ``broker.flows.tickets`` then ends.
- :func:`queue_step` queues one step of a session's story as a comment with its marker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import structlog
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.connectors import changes, intake, links, outbox, texts
from broker.connectors.base import OUTBOUND_EVENTS, TicketInfo, WebhookEvent
from broker.connectors.changes import INBOUND_AUDIT, Applied, Handover, system_actor
from broker.connectors.models import OutboxMessage, WebhookReject
from broker.connectors.registry import registry_for
from broker.connectors.repository import OutboxRepository
from broker.connectors.settings import ConnectorConfig
from broker.db.base import utcnow
from broker.errors import BrokerError, PolicyDenied, ValidationFailed
from broker.evidence.service import ERASED_TEXT
from broker.tickets.models import Ticket
from broker.tickets.repository import TicketRepository

log = structlog.get_logger("broker.connectors")
__all__ = [
    "INBOUND_AUDIT",
    "Applied",
    "Handover",
    "apply_to_ticket",
    "handle_webhook",
    "system_actor",
]


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
    ticket.group_name = info.group
    ticket.url = info.url or ticket.url


async def enqueue_ticket_comment(
    db: AsyncSession,
    ticket: Ticket,
    event_type: str,
    text: str,
    data: Mapping[str, Any] | None = None,
    *,
    marker: str | None = None,
) -> OutboxMessage | None:
    """Queue ``text`` for ``ticket``'s system in the current transaction.

    Returns None (nothing queued) when the system takes no comments (standalone, osTicket
    without its API plugin, a webhook without outbound URL), or when the step ``marker``
    names was queued already. ``data`` goes to webhook receivers as is: keep it to ids and
    facts, never secrets.
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
        marker=marker,
    )


async def queue_step(
    db: AsyncSession,
    ticket: Ticket,
    event_type: str,
    *,
    session_id: str,
    step: str,
    text: str,
    data: Mapping[str, Any] | None = None,
) -> OutboxMessage | None:
    """One step of a session's story as a comment. ``step`` may end with ``-#`` for a step
    that repeats (an expert joining, a file moving): the ``#`` becomes its ordinal."""
    if step.endswith("-#"):
        stem = f"{session_id}/{step[:-1]}"
        step = f"{step[:-1]}{await outbox.count_markers(db, ticket, stem) + 1}"
    marker = f"{session_id}/{step}"
    return await enqueue_ticket_comment(
        db, ticket, event_type, texts.with_marker(text, marker), data, marker=marker
    )


async def expert_joined(
    db: AsyncSession, ticket: Ticket, *, session_id: str, expert: str
) -> OutboxMessage | None:
    """An invited expert joined the session: a step of its story (gateway)."""
    text = texts.expert_text(expert=expert, joined_at=utcnow(), session_id=session_id)
    data = {"session_id": session_id, "expert": expert}
    return await queue_step(
        db, ticket, "session.expert_joined", session_id=session_id, step="expert-#",
        text=text, data=data,
    )  # fmt: skip


async def file_transferred(
    db: AsyncSession, ticket: Ticket, *, session_id: str, facts: Mapping[str, Any]
) -> OutboxMessage | None:
    """A file moved to or from the device, as the log holds it: name, size, SHA-256."""
    name = str(facts.get("name") or "unnamed")[:300]
    size = facts.get("size")
    size = size if isinstance(size, int) and not isinstance(size, bool) else None
    sha256 = str(facts["sha256"])[:64] if facts.get("sha256") else None
    direction = str(facts["direction"])[:20] if facts.get("direction") else None
    text = texts.file_text(
        name=name, size=size, sha256=sha256, direction=direction, session_id=session_id
    )
    data = {"session_id": session_id, "name": name, "size": size, "sha256": sha256,
            "direction": direction}  # fmt: skip
    return await queue_step(
        db, ticket, "session.file_transfer", session_id=session_id, step="file-#",
        text=text, data=data,
    )  # fmt: skip


async def handle_webhook(
    db: AsyncSession, system: str, headers: Mapping[str, str], body: bytes
) -> list[Applied]:
    """Verify and apply an inbound notification; returns what it did to our tickets.

    Refusals (forged, stale, replayed, unreadable) are kept and raised by
    :func:`broker.connectors.intake.receive`. A notification about a ticket we do not know
    changes nothing of ours, but may be the moment to post the ticket's link (``link_note``).
    """
    event = await intake.receive(db, system, headers, body)
    return await apply_to_ticket(db, system, event)


async def apply_to_ticket(db: AsyncSession, system: str, event: WebhookEvent) -> list[Applied]:
    """Apply a verified notification (or what the poll saw) to our ticket, if we know it."""
    await links.offer_link(db, system, event)
    ticket = await TicketRepository(db).by_ref(system, event.external_id)
    if ticket is None:
        log.info("connectors.webhook_unknown_ticket", system=system, event_type=event.event_type)
        return []
    return [await changes.apply_event(db, ticket, event)]


def config_of(db: AsyncSession, system: str) -> ConnectorConfig | None:
    config = getattr(registry_for(db).get(system), "config", None)
    return config if isinstance(config, ConnectorConfig) else None


async def rejected_deliveries(
    db: AsyncSession, system: str | None = None, *, limit: int = 50
) -> list[dict[str, Any]]:
    """The refused inbound deliveries kept for the admin, newest first."""
    return [
        {
            "id": row.id,
            "system": row.system,
            "received_at": row.received_at.isoformat(),
            "status": row.status,
            "error": row.error,
            "detail": row.detail,
            "headers": row.headers,
            "body": row.body,
            "body_size": row.body_size,
            "body_sha256": row.body_sha256,
        }
        for row in await intake.rejected(db, system, limit=limit)
    ]


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


async def forget_ticket(db: AsyncSession, system: str, external_id: str) -> dict[str, int]:
    """Erasure of a ticket's comments: those not yet delivered are dropped (they would carry
    the data to the desk), the delivered ones keep only their ids, times and step; refused
    webhook deliveries of the system that mention the ticket are deleted. Returns the counts
    the erasure record seals."""
    mine = (OutboxMessage.system == system, OutboxMessage.external_id == external_id)
    dropped = await db.execute(
        delete(OutboxMessage)
        .where(*mine, OutboxMessage.delivered_at.is_(None))
        .execution_options(synchronize_session="fetch")
    )
    kept = await db.execute(
        update(OutboxMessage)
        .where(*mine)
        .values(text=ERASED_TEXT, data={}, last_error=None)
        .execution_options(synchronize_session="fetch")
    )
    rejects = await db.execute(
        delete(WebhookReject)
        .where(
            WebhookReject.system == system,
            WebhookReject.body.contains(external_id, autoescape=True),
        )
        .execution_options(synchronize_session="fetch")
    )
    return {
        "dropped_comments": _count(dropped),
        "erased_comments": _count(kept),
        "deleted_webhook_rejects": _count(rejects),
    }


def _count(result: Any) -> int:
    return int(result.rowcount or 0)
