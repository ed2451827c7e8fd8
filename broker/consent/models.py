"""Consent requests and the per-client attempt counters that stop code guessing.

A consent code reads like ``4821-093375``: the first part finds the request among pending
ones, the second is the secret. Splitting it lets a wrong guess be charged to one request
(per-code back-off) as well as to the client that made it (per-client back-off).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, CreatedMixin, IdMixin, UTCDateTime


class ConsentRequest(IdMixin, CreatedMixin, Base):
    __tablename__ = "consent_requests"

    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), unique=True, nullable=False
    )
    # The lookup part of the code is unique among requests that can still be decided;
    # it is cleared once the request is decided, expired or locked, freeing it for reuse.
    lookup: Mapped[str | None] = mapped_column(String(8), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    # Set by requests of older releases, whose wrong codes locked the request for good.
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Wrong secrets (``attempts``) pause entering this code until then, with a growing
    # back-off: never the link, never the session.
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decision: Mapped[str | None] = mapped_column(String(20))
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_from: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    user_agent: Mapped[str | None] = mapped_column(String(300))
    # The code of a request opened by a second approval, encrypted under the broker's secret,
    # so the requesting technician's page can show it (they were not there when it was made);
    # cleared with the lookup once the request is decided or its lookup goes stale.
    handoff_box: Mapped[bytes | None] = mapped_column(LargeBinary)


class ConsentClientThrottle(Base):
    """Wrong code entries per client (IP); kept in the database so replicas share it.

    ``window_started_at`` is the time of the latest wrong code: the count starts afresh once
    the client has been quiet for ``consent_lockout_seconds``."""

    __tablename__ = "consent_client_throttle"

    client_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    window_started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
