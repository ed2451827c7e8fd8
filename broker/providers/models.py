"""Provider-side state of a session: the handle we created there and the events we sealed.

``ProviderSessionLink`` remembers what ``prepare`` made on the provider (a MeshCentral share
``publicid``, an AnyDesk client id) so ``end`` can remove it even after a restart, and whether
removal is still pending because the provider was down. ``ProviderEventMark`` makes
reconciliation idempotent: a provider event is sealed into the audit log exactly once.
``ProviderDeviceSweep`` remembers how far the device-wide sweep has read each managed device's
connections, so an outside connection is noticed even when no session of ours runs there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, CreatedMixin, IdMixin, UTCDateTime


class ProviderSessionLink(CreatedMixin, Base):
    __tablename__ = "provider_session_links"

    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    provider: Mapped[str] = mapped_column(String(30), nullable=False)
    handle: Mapped[str | None] = mapped_column(String(200))
    # The technician's link is a bearer credential for the window: kept so the console can
    # show it again, never logged and never put in the audit payload.
    launch_url: Mapped[str | None] = mapped_column(String(2000))
    launch_uri: Mapped[str | None] = mapped_column(String(500))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_pending: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    reconciled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)


class ProviderEventMark(IdMixin, CreatedMixin, Base):
    __tablename__ = "provider_event_marks"
    __table_args__ = (UniqueConstraint("provider", "event_key"),)

    provider: Mapped[str] = mapped_column(String(30), nullable=False)
    event_key: Mapped[str] = mapped_column(String(200), nullable=False)
    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), nullable=False, index=True
    )
    session_id: Mapped[str | None] = mapped_column(
        ForeignKey("sessions.id", ondelete="SET NULL"), index=True
    )
    verdict: Mapped[str] = mapped_column(String(30), nullable=False)


class ProviderDeviceSweep(Base):
    __tablename__ = "provider_device_sweeps"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    provider: Mapped[str] = mapped_column(String(30), nullable=False)
    # Read up to here (the next sweep starts a quarter of an hour before it)...
    swept_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # ...and last tried then: a provider that is down is asked again a period later, not at
    # every turn of the background loop.
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_error: Mapped[str | None] = mapped_column(String(500))
