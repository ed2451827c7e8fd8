"""Imports every model so ``Base.metadata`` is complete (Alembic, create_all in tools)."""

from __future__ import annotations

from broker.auth.models import ApiToken, LoginKnownSource, User, WebSession
from broker.auth.totp import UserTotp
from broker.connectors.models import OutboxMessage, TicketWatch, WebhookDelivery, WebhookReject
from broker.consent.models import ConsentClientThrottle, ConsentRequest
from broker.db.base import Base
from broker.devices.models import Device, DeviceGroup, GroupMember
from broker.evidence.models import AuditVerification
from broker.evidence.refusals import RefusalTally
from broker.gateway.models import AgentEnrollmentToken, AgentKey, PlaybackRequest
from broker.notices.models import OwnerNotice
from broker.providers.models import (  # noqa: F401 - tables
    ProviderDeviceSweep,
    ProviderEventMark,
    ProviderSessionLink,
)
from broker.replicas.models import Lease, Replica, SealedKey
from broker.sessions.models import RemoteSession, SessionInvitation
from broker.siem.models import SiemCursor
from broker.tickets.models import Ticket

__all__ = [
    "AgentEnrollmentToken",
    "AgentKey",
    "ApiToken",
    "AuditVerification",
    "Base",
    "ConsentClientThrottle",
    "ConsentRequest",
    "Device",
    "DeviceGroup",
    "GroupMember",
    "Lease",
    "LoginKnownSource",
    "OutboxMessage",
    "OwnerNotice",
    "PlaybackRequest",
    "RefusalTally",
    "RemoteSession",
    "Replica",
    "SealedKey",
    "SessionInvitation",
    "SiemCursor",
    "Ticket",
    "TicketWatch",
    "User",
    "UserTotp",
    "WebSession",
    "WebhookDelivery",
    "WebhookReject",
]
