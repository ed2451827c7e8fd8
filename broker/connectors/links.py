"""The "start remote session" link in the ticket: an internal note, posted once per ticket.

With ``link_note = "created"`` the first notification about an open ticket (its desk's
webhook, or the poll) queues the note; with ``"assigned"`` the first one that shows it
assigned to a person. The note is an outbox message like any other comment (durable,
ordered, read back before a retry), marked ``ticket/<id>/link`` so it is queued once.
The link is the broker's deep link (``/t/{system}/{id}/connect``): it grants nothing by
itself, the technician signs in and the end user is asked.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from broker.connectors import outbox, texts
from broker.connectors.base import WebhookEvent
from broker.connectors.registry import registry_for

EVENT = "ticket.link"


def link_marker(external_id: str) -> str:
    return f"ticket/{external_id}/link"


async def offer_link(db: AsyncSession, system: str, event: WebhookEvent) -> bool:
    """Queue the ticket's link note when its system's ``link_note`` asks for it now."""
    connector = registry_for(db).get(system)
    mode = getattr(getattr(connector, "config", None), "link_note", "off")
    if mode == "off" or not connector.can_comment or event.closed:
        return False
    if event.event_type in ("ticket.closed", "ticket.merged"):
        return False
    if mode == "assigned" and not (event.assignee_known and event.assignee):
        return False
    marker = link_marker(event.external_id)
    link = connector.deep_link(event.external_id)
    queued = await outbox.enqueue(
        db,
        system=system,
        external_id=event.external_id,
        event_type=EVENT,
        text=texts.with_marker(texts.link_text(link), marker),
        data={"link": link},
        marker=marker,
    )
    return queued is not None
