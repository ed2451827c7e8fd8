"""Connector tables: the durable outbox, the webhook deliveries already seen, the refused
deliveries kept for the admin, and when each ticket with open sessions was last looked at.

``OutboxMessage`` rows are written in the transaction of the change they report (a session
requested, a consent decided...) and delivered later by :func:`broker.connectors.outbox.
deliver_due`, so a ticket system that is down never loses or blocks the broker's work.
Order per ticket is the integer ``id``: a message waits until every older message of the
same ticket has been delivered. ``WebhookDelivery`` remembers inbound delivery ids for the
replay window so a captured, correctly signed request cannot be played twice (for desks
that send no timestamp, for as long as their config says). ``WebhookReject`` keeps what was
refused (malformed, unknown, forged, replayed), bounded per system, for the admin to read;
``TicketWatch`` records the slow poll of tickets whose sessions are running.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, CreatedMixin, UTCDateTime, new_id, utcnow


class OutboxMessage(CreatedMixin, Base):
    __tablename__ = "connector_outbox"
    __table_args__ = (
        Index("ix_connector_outbox_ticket", "system", "external_id", "delivered_at"),
        Index("ix_connector_outbox_due", "delivered_at", "next_attempt_at"),
        # One comment per (session, step) and ticket: a step queued twice is refused here.
        UniqueConstraint("system", "external_id", "marker"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Sent to receivers so they can drop a message delivered twice (at-least-once delivery).
    delivery_id: Mapped[str] = mapped_column(
        String(36), default=new_id, nullable=False, unique=True
    )
    system: Mapped[str] = mapped_column(String(50), nullable=False)
    external_id: Mapped[str] = mapped_column(String(100), nullable=False)
    event_type: Mapped[str] = mapped_column(String(50), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    # A worker's claim: other workers (other replicas) skip the ticket until it runs out.
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(500))
    # The stable reference of the (session, step) this comment reports; the comment carries it
    # so a delivery retried after a crash can find out whether the desk already has it.
    marker: Mapped[str | None] = mapped_column(String(200))


class WebhookDelivery(Base):
    __tablename__ = "connector_webhook_deliveries"

    system: Mapped[str] = mapped_column(String(50), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, nullable=False, index=True
    )
    # Forgotten after this; None: twice the replay window after ``received_at``.
    keep_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)


class WebhookReject(Base):
    """An inbound delivery that was refused, as received (secrets in headers redacted)."""

    __tablename__ = "connector_webhook_rejects"
    __table_args__ = (Index("ix_connector_webhook_rejects_system", "system", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    system: Mapped[str] = mapped_column(String(50), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    status: Mapped[int] = mapped_column(Integer, nullable=False)
    error: Mapped[str] = mapped_column(String(50), nullable=False)
    detail: Mapped[str] = mapped_column(String(500), nullable=False)
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    body_size: Mapped[int] = mapped_column(Integer, nullable=False)
    body_sha256: Mapped[str] = mapped_column(String(64), nullable=False)


class TicketWatch(Base):
    """The last look at a ticket whose sessions are running (the fallback of the webhooks)."""

    __tablename__ = "connector_ticket_watch"

    ticket_id: Mapped[str] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True
    )
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    failures: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    last_error: Mapped[str | None] = mapped_column(String(500))
