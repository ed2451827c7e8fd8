"""Tables of the web UI: an expert invited into a running session by its technician."""

from __future__ import annotations

from sqlalchemy import ForeignKey, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, CreatedMixin, IdMixin


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
