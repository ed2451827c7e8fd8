"""The ``TicketConnector`` port and the plain values that cross it.

A connector knows one ticket system: how to read a ticket, how to tell a genuine webhook
from a forged or replayed one, how to leave an internal note, and where the broker's
"start remote session" link for a ticket points. It knows nothing of our database; every
failure reaches the caller as a ``broker.errors`` error (``ConnectorError`` for the foreign
system misbehaving, ``NotFound`` for an unknown ticket, ``NotAuthenticated`` for a webhook
that does not verify).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

TicketState = Literal["open", "closed"]
# What a desk tells us about a ticket. ``ticket.updated`` is a snapshot (state, assignee,
# group as they are now): the service compares it with what it knew to tell a reassignment
# or a reopening from an edit of the subject.
INBOUND_EVENTS = frozenset(
    {
        "ticket.created",
        "ticket.updated",
        "ticket.closed",
        "ticket.reopened",
        "ticket.reassigned",
        "ticket.merged",
    }
)
# What the ticket hears, in the order it happens; each is one comment with its own marker.
OUTBOUND_EVENTS = frozenset(
    {
        "ticket.link",
        "session.requested",
        "consent.decided",
        "session.started",
        "session.expert_joined",
        "session.file_transfer",
        "session.ended",
        "evidence.sealed",
        "session.rated",
    }
)


@dataclass(frozen=True)
class TicketInfo:
    """A ticket as its system describes it; ``state`` is already mapped to open/closed."""

    system: str
    external_id: str
    subject: str = ""
    requester: str = ""
    state: TicketState = "open"
    raw_state: str = ""  # the system's own word for the state, for messages
    assignee: str | None = None
    group: str | None = None
    priority: str | None = None
    category: str | None = None
    url: str | None = None
    # False when the system could not be asked (standalone, osTicket): taken as typed.
    verified: bool = True

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    @property
    def ref(self) -> str:
        return f"{self.system}:{self.external_id}"

    @property
    def source(self) -> str:
        """Who vouches for the ticket, for its audit record: ``connector:<system>`` when the
        system answered the lookup, ``standalone`` when the ticket was taken as typed."""
        return f"connector:{self.system}" if self.verified else "standalone"


@dataclass(frozen=True)
class WebhookEvent:
    """An inbound notification that passed the desk's authentication and freshness checks.

    ``delivery_id`` is what a replay would repeat (the desk's delivery id, or the signature
    of a signed body); None when the desk sends neither (Freshdesk), which then gets no
    replay memory. ``assignee``/``group`` count only when ``*_known`` (None = nobody)."""

    delivery_id: str | None
    event_type: str  # one of INBOUND_EVENTS
    external_id: str
    occurred_at: datetime
    state: str | None = None
    assignee: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    assignee_known: bool = False
    group: str | None = None
    group_known: bool = False
    closed: bool | None = None  # the connector's verdict on ``state``; None: by the words
    merged_into: str | None = None
    subject: str | None = None
    # How long the delivery id is remembered; None: twice the replay window.
    remember_for: timedelta | None = None
    source: str = "webhook"  # or "poll"


@dataclass(frozen=True)
class OutboundMessage:
    """One outbox row as a connector delivers it.

    ``marker``: the stable reference of the (session, step) the comment reports; its text
    ends with :func:`marker_line`. ``retry``: an earlier try may have reached the desk (it
    failed, or the broker died while it ran), so the connector reads the ticket's comments
    back before posting again."""

    delivery_id: str
    system: str
    external_id: str
    event_type: str
    text: str
    data: dict[str, Any]
    created_at: datetime
    marker: str | None = None
    retry: bool = False


def marker_line(marker: str) -> str:
    """The line a comment ends with; the closing bracket keeps ``file-1`` from ``file-10``."""
    return f"[supportbroker-ref {marker}]"


@runtime_checkable
class TicketConnector(Protocol):
    """What the broker needs from a ticket system."""

    system: str  # the configured name (``zammad``, ``helpdesk-eu``...)
    kind: str  # the implementation (``zammad``, ``glpi``, ``null``...)
    can_lookup: bool  # False: tickets are taken as typed
    can_comment: bool  # False: nothing is queued for this system

    async def lookup_ticket(self, external_id: str) -> TicketInfo: ...

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime | None = None
    ) -> WebhookEvent: ...

    async def post_comment(self, external_id: str, text: str, internal: bool = True) -> None: ...

    async def deliver(self, message: OutboundMessage) -> None: ...

    async def comment_texts(self, external_id: str) -> list[str]:
        """The ticket's comments as text (what a retried delivery looks for its marker in);
        empty where the system cannot be read back."""
        ...

    def deep_link(self, external_id: str) -> str: ...

    async def check(self) -> str: ...

    async def aclose(self) -> None: ...
