"""The owner-notice outbox: one row per mail owed to a device owner, kept until delivered.

A row is written in the transaction that ended the session, so a notice exists exactly when
the end it reports committed; the background job delivers it and marks it sent. Nothing is
dropped: a failed try backs off and is tried again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, CreatedMixin, IdMixin, UTCDateTime


class OwnerNotice(IdMixin, CreatedMixin, Base):
    __tablename__ = "owner_notices"
    __table_args__ = (Index("ix_owner_notices_due", "sent_at", "next_attempt_at"),)

    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    ticket_ref: Mapped[str] = mapped_column(String(300), nullable=False)  # its audit stream
    recipient: Mapped[str] = mapped_column(String(320), nullable=False)
    subject: Mapped[str] = mapped_column(String(300), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # A replica delivering the row holds it until then (compare-and-set; see the service).
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(500))
