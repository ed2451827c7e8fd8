"""Agent enrollment tokens and enrolled agent keys (with which broker process holds each link)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, CreatedMixin, IdMixin, UTCDateTime


class AgentEnrollmentToken(IdMixin, CreatedMixin, Base):
    """A one-time secret an admin hands to a device; only its hash is stored."""

    __tablename__ = "agent_enrollment_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    group_id: Mapped[str] = mapped_column(
        ForeignKey("device_groups.id", ondelete="CASCADE"), nullable=False, index=True
    )
    created_by: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    used_by_device_id: Mapped[str | None] = mapped_column(
        ForeignKey("devices.id", ondelete="SET NULL")
    )


class AgentKey(CreatedMixin, Base):
    """The device key an agent enrolled with; the SSH handshake proves possession."""

    __tablename__ = "agent_keys"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    fingerprint: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    public_key: Mapped[str] = mapped_column(String(1000), nullable=False)
    hostname: Mapped[str] = mapped_column(String(255), default="", nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Which broker process holds the live connection (several replicas share one database).
    connected_node: Mapped[str | None] = mapped_column(String(200))
    connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    peer_address: Mapped[str | None] = mapped_column(String(64))


class PlaybackRequest(IdMixin, CreatedMixin, Base):
    """An auditor's request to replay a recording or export plaintext under dual control.

    A second, different auditor decides it; an approval opens the replay (``kind`` replay, of
    ``session_id``) or the plaintext export (``kind`` export, of the ticket ``ticket_ref``) to
    the requester alone until ``expires_at`` (docs/OVERSIGHT.md).
    """

    __tablename__ = "playback_requests"

    kind: Mapped[str] = mapped_column(String(10), nullable=False)
    ticket_ref: Mapped[str] = mapped_column(String(300), nullable=False, index=True)
    session_id: Mapped[str | None] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    requester_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    reason: Mapped[str] = mapped_column(String(500), nullable=False)
    state: Mapped[str] = mapped_column(String(10), default="pending", nullable=False)
    decided_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decision_reason: Mapped[str | None] = mapped_column(String(500))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
