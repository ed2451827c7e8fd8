"""Zammad: ``GET /api/v1/tickets/{id}?expand=true``; internal notes via ``/api/v1/ticket_articles``.

Auth is an access token (``Authorization: Token token=...``). ``expand=true`` makes Zammad
return the names of state, owner, customer, group and priority beside their ids. The
external id is Zammad's ticket *id* (the one in ``#ticket/zoom/{id}``), not its number.
Docs: https://docs.zammad.org/en/latest/api/ticket/index.html and .../api/ticket/articles.html
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import ClassVar

from broker.connectors.base import TicketInfo, WebhookEvent
from broker.connectors.http import HttpConnector
from broker.connectors.settings import ConnectorConfig
from broker.connectors.zammad import inbound
from broker.connectors.zammad.config import ZammadConfig


class ZammadConnector(HttpConnector[ZammadConfig]):
    kind: ClassVar[str] = "zammad"
    config_model: ClassVar[type[ConnectorConfig]] = ZammadConfig
    default_fields: ClassVar[dict[str, str]] = {
        "subject": "title",
        "requester": "customer",
        "state": "state",
        "assignee": "owner",
        "group": "group",
        "priority": "priority",
        "category": "type",
    }
    default_closed: ClassVar[frozenset[str]] = frozenset({"closed", "merged", "removed"})

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Token token={self.config.token.get_secret_value()}"}

    async def lookup_ticket(self, external_id: str) -> TicketInfo:
        ticket_id = self.numeric_id(external_id)
        response = await self.request(
            "GET", f"/api/v1/tickets/{ticket_id}", params={"expand": "true"}
        )
        info = self.ticket_from(
            external_id, self.json_of(response), url=f"{self.config.root}/#ticket/zoom/{ticket_id}"
        )
        # Zammad's "nobody" owner is the system user, shown as "-".
        if info.assignee == "-":
            info = replace(info, assignee=None)
        return info

    async def post_comment(self, external_id: str, text: str, internal: bool = True) -> None:
        ticket_id = self.numeric_id(external_id)
        await self.request(
            "POST",
            "/api/v1/ticket_articles",
            expect=(200, 201),
            json={
                "ticket_id": ticket_id,
                "subject": "Remote support (supportbroker)",
                "body": text,
                "content_type": "text/plain",
                "type": "note",
                "internal": internal,
            },
        )

    async def comment_texts(self, external_id: str) -> list[str]:
        ticket_id = self.numeric_id(external_id)
        articles = self.json_of(
            await self.request("GET", f"/api/v1/ticket_articles/by_ticket/{ticket_id}")
        )
        return [str(a.get("body", "")) for a in articles if isinstance(a, dict)]

    def native_event(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime
    ) -> WebhookEvent:
        return inbound.parse(
            self.system, self.config, headers, body, closed_words=self.closed_words(), now=now
        )

    async def check(self) -> str:
        await self.request("GET", "/api/v1/users/me", what="user")
        return "ok"
