"""What a desk's notification (or the slow poll) changes on our ticket, and what it means.

A notification is a snapshot of the ticket in its system (state, assignee, group) or names
the change itself (our signed format). :func:`apply_event` compares it with what we knew,
updates our ticket and seals one event for the change: ``ticket.closed``,
``ticket.merged``, ``ticket.reopened``, ``ticket.reassigned`` (another person, or another
group), ``ticket.updated`` (anything else we keep); nothing when nothing changed. It says
what the change means for the ticket's open sessions (:class:`Applied`): a closed or merged
ticket ends them all; a ticket that changed hands ends those whose technician it no longer
belongs to, which ``broker.flows.tickets`` decides per session (:func:`still_theirs`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from broker.connectors.base import TicketInfo, WebhookEvent
from broker.connectors.registry import registry_for
from broker.connectors.settings import ConnectorConfig
from broker.db.base import utcnow
from broker.evidence.events import EventType
from broker.evidence.service import Actor, record_event
from broker.tickets.models import Ticket

# The audit event a notification of each type becomes when nothing more specific applies.
INBOUND_AUDIT: dict[str, EventType] = {
    "ticket.created": EventType.ticket_updated,  # a ticket we already knew: an update
    "ticket.updated": EventType.ticket_updated,
    "ticket.closed": EventType.ticket_closed,
    "ticket.reopened": EventType.ticket_reopened,
    "ticket.reassigned": EventType.ticket_reassigned,
    "ticket.merged": EventType.ticket_merged,
}


@dataclass(frozen=True)
class Handover:
    """The ticket changed hands: to ``assignee`` (None: nobody in person) in ``group``."""

    assignee: str | None
    group: str | None
    why: str


@dataclass(frozen=True)
class Applied:
    """A notification applied to our ticket. ``ends``: why every open session ends now
    (closed, merged); ``handover``: the ticket changed hands, so sessions end unless it is
    still their technician's."""

    ticket: Ticket
    ends: str | None = None
    handover: Handover | None = None


def system_actor(system: str) -> Actor:
    return Actor(kind="ticket_system", name=system)


def _closed_words(db: AsyncSession, system: str) -> frozenset[str]:
    connector = registry_for(db).get(system)
    words = getattr(connector, "closed_words", None)
    return frozenset(words()) if callable(words) else frozenset({"closed"})


def event_from_info(info: TicketInfo, *, delivery_id: str | None = None) -> WebhookEvent:
    """What a lookup (the slow poll) says, as a notification would say it."""
    return WebhookEvent(
        delivery_id=delivery_id,
        event_type="ticket.updated",
        external_id=info.external_id,
        occurred_at=utcnow(),
        state=info.raw_state or info.state,
        closed=not info.is_open,
        assignee=info.assignee,
        assignee_known=True,
        group=info.group,
        group_known=True,
        subject=info.subject or None,
        source="poll",
    )


async def apply_event(db: AsyncSession, ticket: Ticket, event: WebhookEvent) -> Applied:
    """Update ``ticket`` from ``event``, seal the change, say what it means for sessions."""
    before = {"state": ticket.state, "assignee": ticket.assignee, "group": ticket.group_name}
    word = (event.state or "").lower()
    merged = event.event_type == "ticket.merged"
    if event.closed is not None:
        closing = event.closed or merged
    else:
        closing = event.event_type in ("ticket.closed", "ticket.merged") or (
            bool(word) and word in _closed_words(db, ticket.system)
        )
    reopening = not closing and (event.event_type == "ticket.reopened" or event.state is not None)
    was_open = ticket.is_open
    if closing:
        ticket.state = "closed"
    elif reopening:
        ticket.state = "open"
    native = event.source != "relay"
    handover = _handover(ticket, event, native=native)
    if event.assignee_known or event.event_type == "ticket.reassigned":
        ticket.assignee = event.assignee
    if event.group_known:
        ticket.group_name = event.group
    if event.subject:
        ticket.subject = event.subject[:500]
    after = {"state": ticket.state, "assignee": ticket.assignee, "group": ticket.group_name}
    audit = _audit_event(
        event, before, after, was_open=was_open, is_open=ticket.is_open, handover=handover
    )
    if audit is not None:
        data = {
            "delivery_id": event.delivery_id,
            "source": event.source,
            "before": before,
            "after": after,
            **({"state": event.state} if event.state else {}),
            **({"merged_into": event.merged_into} if event.merged_into else {}),
        }
        await record_event(
            db, audit, ticket=ticket.ref, actor=system_actor(ticket.system), data=data
        )
    if merged:
        into = f" into {event.merged_into}" if event.merged_into else ""
        return Applied(ticket, ends=f"ticket merged{into}")
    if closing:
        detail = f" ({event.state})" if word and word != "closed" else ""
        return Applied(ticket, ends=f"ticket closed{detail}")
    return Applied(ticket, handover=handover)


def _handover(ticket: Ticket, event: WebhookEvent, *, native: bool) -> Handover | None:
    """The ticket changed hands, seen before ``ticket`` is updated. A relay's notification
    naming an assignee counts only if we knew the previous one (it may simply not say);
    a desk's own snapshot (or the poll) says who has it, nobody included."""
    new_assignee = event.assignee if event.assignee_known else ticket.assignee
    new_group = event.group if event.group_known else ticket.group_name
    person_moved = event.event_type == "ticket.reassigned" or (
        event.assignee_known
        and event.assignee != ticket.assignee
        and (native or ticket.assignee is not None)
    )
    group_moved = (
        event.group_known and ticket.group_name is not None and event.group != ticket.group_name
    )
    if not person_moved and not group_moved:
        return None
    if person_moved:
        why = f"ticket reassigned to {new_assignee or 'nobody'}"
    else:
        why = f"ticket moved to group {new_group or 'none'}"
    return Handover(new_assignee, new_group, why)


def _audit_event(
    event: WebhookEvent,
    before: dict[str, str | None],
    after: dict[str, str | None],
    *,
    was_open: bool,
    is_open: bool,
    handover: Handover | None,
) -> EventType | None:
    """The one event for what changed; None when nothing did. A relay that names an event
    explicitly still gets it on record when nothing changed, as it always did; a desk's
    snapshot said again (a retry, a second trigger) gets nothing."""
    if event.event_type == "ticket.merged":
        found: EventType | None = EventType.ticket_merged
    elif was_open != is_open:
        found = EventType.ticket_reopened if is_open else EventType.ticket_closed
    elif handover is not None:
        found = EventType.ticket_reassigned
    elif before != after or (
        event.source == "relay" and event.event_type not in ("ticket.updated", "ticket.created")
    ):
        found = INBOUND_AUDIT[event.event_type]
    else:
        found = None
    return found


def still_theirs(
    config: ConnectorConfig | None,
    handover: Handover,
    names: Iterable[str],
    groups: Iterable[str],
) -> bool:
    """Whether a ticket that changed hands is still the technician's: assigned to them in
    person, or to nobody in person and to a group (through ``group_map``) of theirs, or to
    nobody at all."""
    folded = {n.strip().casefold() for n in names if n and n.strip()}
    if handover.assignee:
        return handover.assignee.strip().casefold() in folded
    if handover.group is None:
        return True
    mapping = config.group_map if config is not None else {}
    ours = mapping.get(handover.group, handover.group)
    return ours.strip().casefold() in {g.strip().casefold() for g in groups}
