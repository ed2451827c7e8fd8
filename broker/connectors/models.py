"""Connector tables: the durable outbox and the webhook deliveries already seen.

``OutboxMessage`` rows are written in the transaction of the change they report (a session
requested, a consent decided...) and delivered later by :func:`broker.connectors.outbox.
deliver_due`, so a ticket system that is down never loses or blocks the broker's work.
Order per ticket is the integer ``id``: a message waits until every older message of the
same ticket has been delivered. ``WebhookDelivery`` remembers inbound delivery ids for the
replay window so a captured, correctly signed request cannot be played twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, CreatedMixin, UTCDateTime, new_id, utcnow


class OutboxMessage(CreatedMixin, Base):
    __tablename__ = "connector_outbox"
    __table_args__ = (
        Index("ix_connector_outbox_ticket", "system", "external_id", "delivered_at"),
        Index("ix_connector_outbox_due", "delivered_at", "next_attempt_at"),
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


class WebhookDelivery(Base):
    __tablename__ = "connector_webhook_deliveries"

    system: Mapped[str] = mapped_column(String(50), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, nullable=False, index=True
    )
