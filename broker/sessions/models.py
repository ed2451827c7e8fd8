"""A remote session and the timestamp of every state it passed through; the experts its
technician invited to help."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, CreatedMixin, IdMixin, UTCDateTime


class RemoteSession(IdMixin, CreatedMixin, Base):
    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_technician_state", "technician_id", "state"),
        Index("ix_sessions_state_deadline", "state", "deadline_at"),
        # The auditor's search pages in requested_at order, optionally by one column: each
        # filter's index ends in (requested_at, id), read backwards for the page (0030).
        Index("ix_sessions_requested", "requested_at", "id"),
        Index("ix_sessions_technician_requested", "technician_id", "requested_at", "id"),
        Index("ix_sessions_device_requested", "device_id", "requested_at", "id"),
        Index("ix_sessions_provider_requested", "provider", "requested_at", "id"),
        Index("ix_sessions_state_requested", "state", "requested_at", "id"),
    )

    ticket_id: Mapped[str] = mapped_column(
        ForeignKey("tickets.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    technician_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="RESTRICT"), nullable=False
    )
    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    provider: Mapped[str] = mapped_column(String(30), nullable=False)
    reason: Mapped[str] = mapped_column(String(2000), nullable=False)
    capabilities: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    duration_minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    unattended: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False, index=True)
    # Optimistic concurrency: every transition is a compare-and-set on (state, version).
    version: Mapped[int] = mapped_column(Integer, default=1, nullable=False)
    # When the current state runs out: consent expiry while awaiting, time limit once approved.
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    awaiting_approval_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    awaiting_consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    active_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    denied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    end_reason: Mapped[str | None] = mapped_column(String(500))
    ended_by: Mapped[str | None] = mapped_column(String(200))
    # The broker replica whose agent link holds the grant (it records the session and
    # enforces its rights); a session never moves to another (broker.replicas.takeover).
    served_by: Mapped[str | None] = mapped_column(String(200))
    # Answers to the device group's pre-session questions, and the end user's rating.
    answers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    rating: Mapped[int | None] = mapped_column(Integer)
    rating_comment: Mapped[str | None] = mapped_column(String(2000))


class SessionInvitation(IdMixin, CreatedMixin, Base):
    """``expert_id`` was invited by ``invited_by`` to help on ``session_id``.

    The invitation puts the session in the expert's console and lets them open it there; the
    gateway's ``join`` mode decides who may attach to the terminal. The audit event
    ``session.expert_invited`` is the lasting record; this row is what the pages query.
    """

    __tablename__ = "session_invitations"
    __table_args__ = (UniqueConstraint("session_id", "expert_id"),)

    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False
    )
    expert_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    invited_by: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
