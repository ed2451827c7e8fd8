"""A ticket is identified by its system and its id there; sessions hang off it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, CreatedMixin, IdMixin, UTCDateTime, utcnow

CLOSED_STATES = frozenset({"closed", "resolved", "merged", "cancelled", "removed"})


class Ticket(IdMixin, CreatedMixin, Base):
    __tablename__ = "tickets"
    __table_args__ = (UniqueConstraint("system", "external_id"),)

    system: Mapped[str] = mapped_column(String(50), nullable=False)
    external_id: Mapped[str] = mapped_column(String(100), nullable=False)
    subject: Mapped[str] = mapped_column(String(500), default="", nullable=False)
    requester: Mapped[str] = mapped_column(String(200), default="", nullable=False)
    state: Mapped[str] = mapped_column(String(30), default="open", nullable=False)
    assignee: Mapped[str | None] = mapped_column(String(200))
    # The group (queue) the ticket's system has it in, as its connector last reported it: a
    # move out of the technician's groups ends their session (``group_map``).
    group_name: Mapped[str | None] = mapped_column(String(200))
    url: Mapped[str | None] = mapped_column(String(1000))
    # As the request gave them: a device group's approval policy may be narrowed by them.
    priority: Mapped[str | None] = mapped_column(String(50))
    category: Mapped[str | None] = mapped_column(String(100))
    # Two auditors for this ticket's recordings and plaintext export, whatever the device
    # group's policy says (docs/OVERSIGHT.md); switched on by an auditor, off by an admin.
    dual_control: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false"), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )

    @property
    def ref(self) -> str:
        """The ticket's key in the audit log and in messages: ``system:external_id``."""
        return f"{self.system}:{self.external_id}"

    @property
    def is_open(self) -> bool:
        return self.state.lower() not in CLOSED_STATES
