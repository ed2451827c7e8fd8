"""Device groups carry the policy for their devices; technicians are members of groups."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, String, UniqueConstraint, false, text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, CreatedMixin, IdMixin, UTCDateTime


class DeviceGroup(IdMixin, CreatedMixin, Base):
    __tablename__ = "device_groups"

    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    description: Mapped[str] = mapped_column(String(500), default="", nullable=False)
    unattended_allowed: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    consent_timeout_seconds: Mapped[int | None] = mapped_column()
    record_input: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    allowed_ports: Mapped[list[int]] = mapped_column(JSON, default=list, nullable=False)
    allowed_paths: Mapped[list[str]] = mapped_column(JSON, default=list, nullable=False)
    # The largest file a transfer through the broker may move (None: the broker's default).
    max_file_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # Keep each transferred file itself, encrypted in the ticket's audit stream, so an
    # auditor can download it later with a reason (docs/FILES.md).
    keep_files: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false(), nullable=False
    )
    # Pre-session questions shown on the consent page: [{"id": ..., "label": ...}].
    questions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, nullable=False)
    # Second-person approval (docs/OVERSIGHT.md): a request waits for another technician or a
    # supervisor of the group before the end user is asked; narrowed to tickets of these
    # priorities / categories when the lists are not empty.
    approval_required: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false"), nullable=False
    )
    approval_priorities: Mapped[list[str]] = mapped_column(
        JSON, default=list, server_default=text("'[]'"), nullable=False
    )
    approval_categories: Mapped[list[str]] = mapped_column(
        JSON, default=list, server_default=text("'[]'"), nullable=False
    )
    # Dual-control playback (docs/OVERSIGHT.md): replaying a recording of this group's
    # sessions, or exporting their ticket's plaintext, needs a second auditor's approval.
    dual_control_playback: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false"), nullable=False
    )


class GroupMember(Base):
    """A technician who may see and serve the devices of a group."""

    __tablename__ = "group_members"

    group_id: Mapped[str] = mapped_column(
        ForeignKey("device_groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Device(IdMixin, CreatedMixin, Base):
    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("provider", "provider_device_id"),)

    name: Mapped[str] = mapped_column(String(200), nullable=False)
    group_id: Mapped[str] = mapped_column(
        ForeignKey("device_groups.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    provider: Mapped[str] = mapped_column(String(30), nullable=False)
    provider_device_id: Mapped[str] = mapped_column(String(200), nullable=False)
    asset_tag: Mapped[str | None] = mapped_column(String(100))
    owner_name: Mapped[str | None] = mapped_column(String(200))
    owner_contact: Mapped[str | None] = mapped_column(String(320))
    # Rights the device cannot give, each with the reason its agent reported at connect
    # (a desktop on Wayland or with no display, a shell on Windows): requests are refused.
    unavailable: Mapped[dict[str, str]] = mapped_column(
        JSON, default=dict, server_default=text("'{}'"), nullable=False
    )
    # The version the device's agent last reported in its hello (None: never connected).
    agent_version: Mapped[str | None] = mapped_column(String(50))
    # Retired: kept for its sessions' audit trail, hidden from pickers, refused for new
    # sessions, its agent key revoked (``broker.flows.devices.retire_device``).
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
