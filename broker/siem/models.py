"""Each SIEM target's durable cursor: the next log position it has not acknowledged yet."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UTCDateTime


class SiemCursor(Base):
    """Advanced only after the receiver acknowledged everything before ``next_position``."""

    __tablename__ = "siem_cursors"

    target: Mapped[str] = mapped_column(String(40), primary_key=True)
    next_position: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    delivered: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # in a row
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
