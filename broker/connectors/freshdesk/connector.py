"""Freshdesk: ``GET /api/v2/tickets/{id}?include=requester``; ``POST .../notes`` private.

Auth is HTTP basic with the API key as user name and ``X`` as password. Status numbers:
2 open, 3 pending, 4 resolved, 5 closed; priority 1 low .. 4 urgent. Notes take HTML, so
our plain text is escaped and its line breaks become ``<br>``.
Docs: https://developers.freshdesk.com/api/#view_a_ticket and
https://developers.freshdesk.com/api/#add_note_to_a_ticket
"""

from __future__ import annotations

import html
from typing import Any, ClassVar, Literal

import httpx
from pydantic import SecretStr

from broker.connectors.base import TicketInfo
from broker.connectors.http import HttpConnector
from broker.connectors.settings import ConnectorConfig

STATUS = {2: "open", 3: "pending", 4: "resolved", 5: "closed"}
PRIORITY = {1: "low", 2: "medium", 3: "high", 4: "urgent"}


class FreshdeskConfig(ConnectorConfig):
    kind: Literal["freshdesk"] = "freshdesk"
    api_key: SecretStr


class FreshdeskConnector(HttpConnector[FreshdeskConfig]):
    kind: ClassVar[str] = "freshdesk"
    config_model: ClassVar[type[ConnectorConfig]] = FreshdeskConfig
    default_fields: ClassVar[dict[str, str]] = {
        "subject": "subject",
        "requester": "requester",
        "state": "status_name",
        "assignee": "responder_id",
        "group": "group_id",
        "priority": "priority_name",
        "category": "type",
    }
    default_closed: ClassVar[frozenset[str]] = frozenset({"resolved", "closed"})

    def auth(self) -> httpx.Auth | None:
        return httpx.BasicAuth(self.config.api_key.get_secret_value(), "X")

    async def lookup_ticket(self, external_id: str) -> TicketInfo:
        ticket_id = self.numeric_id(external_id)
        response = await self.request(
            "GET", f"/api/v2/tickets/{ticket_id}", params={"include": "requester"}
        )
        raw: Any = self.json_of(response)
        if isinstance(raw, dict):
            raw = dict(raw)
            raw["status_name"] = STATUS.get(raw.get("status", 0), str(raw.get("status", "")))
            raw["priority_name"] = PRIORITY.get(raw.get("priority", 0))
        return self.ticket_from(external_id, raw, url=f"{self.config.root}/a/tickets/{ticket_id}")

    async def post_comment(self, external_id: str, text: str, internal: bool = True) -> None:
        ticket_id = self.numeric_id(external_id)
        body = html.escape(text).replace("\n", "<br>")
        await self.request(
            "POST",
            f"/api/v2/tickets/{ticket_id}/notes",
            expect=(201,),
            json={"body": body, "private": internal},
        )

    async def check(self) -> str:
        await self.request("GET", "/api/v2/agents/me", what="agent")
        return "ok"
