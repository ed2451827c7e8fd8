"""Outcomes of whole-log verifications (background on a schedule, or asked for by an auditor).

A row is written when a verification starts and completed when it ends, so a page shows the
last finished verdict (and whether one is running) without verifying the log itself.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, IdMixin, UTCDateTime


class AuditVerification(IdMixin, Base):
    __tablename__ = "audit_verifications"

    trigger: Mapped[str] = mapped_column(String(20), nullable=False)  # schedule | request
    requested_by: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ok: Mapped[bool | None] = mapped_column(Boolean)
    size: Mapped[int | None] = mapped_column(BigInteger)  # records verified
    covered: Mapped[int | None] = mapped_column(BigInteger)  # of them under a checkpoint
    verdict: Mapped[str | None] = mapped_column(Text)
    position: Mapped[int | None] = mapped_column(BigInteger)  # first bad record, if any
    record_id: Mapped[str | None] = mapped_column(String(36))

    __table_args__ = (Index("ix_audit_verifications_started_at", "started_at"),)
