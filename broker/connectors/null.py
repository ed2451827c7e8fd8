"""Standalone mode: no ticket system. The ticket is taken as typed; nothing is sent anywhere."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import ClassVar
from urllib.parse import quote

import httpx

from broker.connectors.base import OutboundMessage, TicketInfo, WebhookEvent
from broker.connectors.settings import ConnectorConfig
from broker.errors import NotAuthenticated


class NullConfig(ConnectorConfig):
    pass


class NullConnector:
    kind: ClassVar[str] = "null"
    config_model: ClassVar[type[ConnectorConfig]] = NullConfig
    can_lookup: ClassVar[bool] = False
    can_comment: ClassVar[bool] = False

    def __init__(
        self,
        system: str,
        config: ConnectorConfig | None = None,
        *,
        broker_url: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.system = system
        self.config = config or NullConfig(kind="null")
        self.broker_url = broker_url.rstrip("/")

    async def lookup_ticket(self, external_id: str) -> TicketInfo:
        return TicketInfo(system=self.system, external_id=external_id, verified=False)

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime | None = None
    ) -> WebhookEvent:
        raise NotAuthenticated(f"{self.system!r} is not a configured ticket system")

    async def post_comment(self, external_id: str, text: str, internal: bool = True) -> None:
        return None  # standalone: there is nowhere to write to

    async def deliver(self, message: OutboundMessage) -> None:
        return None

    async def comment_texts(self, external_id: str) -> list[str]:
        return []

    def deep_link(self, external_id: str) -> str:
        return (
            f"{self.broker_url}/t/{quote(self.system, safe='')}/"
            f"{quote(external_id, safe='')}/connect"
        )

    async def check(self) -> str:
        return "standalone"

    async def aclose(self) -> None:
        return None
