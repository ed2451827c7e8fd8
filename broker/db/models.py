"""Imports every model so ``Base.metadata`` is complete (Alembic, create_all in tools)."""

from __future__ import annotations

from broker.auth.models import ApiToken, User, WebSession
from broker.auth.totp import UserTotp
from broker.connectors.models import OutboxMessage, WebhookDelivery
from broker.consent.models import ConsentClientThrottle, ConsentRequest
from broker.db.base import Base
from broker.devices.models import Device, DeviceGroup, GroupMember
from broker.gateway.models import AgentEnrollmentToken, AgentKey
from broker.providers.models import ProviderEventMark, ProviderSessionLink  # noqa: F401 - tables
from broker.sessions.models import RemoteSession, SessionInvitation
from broker.tickets.models import Ticket

__all__ = [
    "AgentEnrollmentToken",
    "AgentKey",
    "ApiToken",
    "Base",
    "ConsentClientThrottle",
    "ConsentRequest",
    "Device",
    "DeviceGroup",
    "GroupMember",
    "OutboxMessage",
    "RemoteSession",
    "SessionInvitation",
    "Ticket",
    "User",
    "UserTotp",
    "WebSession",
    "WebhookDelivery",
]
