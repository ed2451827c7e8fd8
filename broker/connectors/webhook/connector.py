"""The generic signed webhook: for any system that can send and receive JSON over HTTP.

Outbound, every outbox message is POSTed to ``url`` as
``{"id", "type", "occurred_at", "ticket": {"system", "id"}, "text", "data"}`` signed as in
:mod:`broker.connectors.signing` (the same ``secret`` verifies inbound webhooks unless
``webhook_secret`` is set). Any 2xx is success; anything else is retried by the outbox.
Lookup is optional: with ``lookup_url`` (``{external_id}`` is substituted) the answer's
``subject``/``requester``/``state``/``assignee``/``priority``/``category``/``url`` are
used (remappable with ``fields``); without it the ticket is taken as typed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import ClassVar, Literal
from urllib.parse import quote

from pydantic import SecretStr

from broker.connectors import signing
from broker.connectors.base import OutboundMessage, TicketInfo, WebhookEvent
from broker.connectors.http import HttpConnector, parse_event, pick, text_of
from broker.connectors.settings import ConnectorConfig
from broker.db.base import new_id, utcnow


class WebhookConfig(ConnectorConfig):
    kind: Literal["webhook"] = "webhook"
    url: str = ""  # where outbound events go; empty: inbound only
    secret: SecretStr
    lookup_url: str | None = None


class WebhookConnector(HttpConnector[WebhookConfig]):
    kind: ClassVar[str] = "webhook"
    config_model: ClassVar[type[ConnectorConfig]] = WebhookConfig
    default_fields: ClassVar[dict[str, str]] = {
        name: name
        for name in ("subject", "requester", "state", "assignee", "group", "priority", "category")
    }

    @property
    def can_lookup(self) -> bool:  # type: ignore[override]
        return self.config.lookup_url is not None

    @property
    def can_comment(self) -> bool:  # type: ignore[override]
        return bool(self.config.url)

    def inbound_secret(self) -> str:
        chosen = self.config.webhook_secret or self.config.secret
        return chosen.get_secret_value()

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime | None = None
    ) -> WebhookEvent:
        delivery_id, signed_at = signing.verify(
            self.inbound_secret(),
            headers,
            body,
            window_seconds=self.config.replay_window_seconds,
            now=now,
        )
        return parse_event(self.system, delivery_id, signed_at, body)

    async def lookup_ticket(self, external_id: str) -> TicketInfo:
        if self.config.lookup_url is None:
            return TicketInfo(system=self.system, external_id=external_id, verified=False)
        url = self.config.lookup_url.format(external_id=quote(external_id, safe=""))
        raw = self.json_of(await self.request("GET", url))
        return self.ticket_from(external_id, raw, url=text_of(pick(raw, "url")))

    async def deliver(self, message: OutboundMessage) -> None:
        if not self.config.url:
            return
        body = json.dumps(
            {
                "id": message.delivery_id,
                "type": message.event_type,
                "occurred_at": message.created_at.isoformat(),
                "ticket": {"system": message.system, "id": message.external_id},
                "text": message.text,
                "data": message.data,
            },
            separators=(",", ":"),
            sort_keys=True,
            default=str,
        ).encode()
        headers = signing.signed_headers(
            self.config.secret.get_secret_value(),
            body,
            delivery_id=message.delivery_id,
            event_type=message.event_type,
        )
        await self.request(
            "POST", self.config.url, expect=tuple(range(200, 300)), content=body, headers=headers
        )

    async def post_comment(self, external_id: str, text: str, internal: bool = True) -> None:
        await self.deliver(
            OutboundMessage(
                delivery_id=new_id(),
                system=self.system,
                external_id=external_id,
                event_type="ticket.comment",
                text=text,
                data={"internal": internal},
                created_at=utcnow(),
            )
        )

    async def check(self) -> str:
        return "configured" if self.config.url or self.config.lookup_url else "inbound only"
