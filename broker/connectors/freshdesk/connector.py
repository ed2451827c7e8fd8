"""Freshdesk: ``GET /api/v2/tickets/{id}?include=requester``; ``POST .../notes`` private.

Auth is HTTP basic with the API key as user name and ``X`` as password. Status numbers:
2 open, 3 pending, 4 resolved, 5 closed; priority 1 low .. 4 urgent. Notes take HTML, so
our plain text is escaped and its line breaks become ``<br>``. The ticket names its agent
and group by id (``responder_id``, ``group_id``); the lookup asks ``GET /api/v2/agents/{id}``
and ``GET /api/v2/groups/{id}`` for the agent's e-mail and the group's name, which is what
Freshdesk's webhooks carry (``{{ticket.agent.email}}``, ``{{ticket.group.name}}``) and what
a technician is known by. A retried comment is looked for in
``GET /api/v2/tickets/{id}/conversations`` (paged). Freshdesk's automation webhooks are read
by :mod:`broker.connectors.freshdesk.inbound`.
Docs: https://developers.freshdesk.com/api/#view_a_ticket,
https://developers.freshdesk.com/api/#add_note_to_a_ticket,
https://developers.freshdesk.com/api/#view_agent, https://developers.freshdesk.com/api/#view_group
and https://developers.freshdesk.com/api/#list_all_ticket_notes
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

import httpx

from broker.connectors.base import TicketInfo, WebhookEvent
from broker.connectors.freshdesk import inbound
from broker.connectors.freshdesk.config import FreshdeskConfig
from broker.connectors.http import HttpConnector, pick, text_of
from broker.connectors.settings import ConnectorConfig
from broker.errors import NotFound

STATUS = {2: "open", 3: "pending", 4: "resolved", 5: "closed"}
PRIORITY = {1: "low", 2: "medium", 3: "high", 4: "urgent"}
PER_PAGE = 100
MAX_PAGES = 20


class FreshdeskConnector(HttpConnector[FreshdeskConfig]):
    kind: ClassVar[str] = "freshdesk"
    config_model: ClassVar[type[ConnectorConfig]] = FreshdeskConfig
    default_fields: ClassVar[dict[str, str]] = {
        "subject": "subject",
        "requester": "requester",
        "state": "status_name",
        "assignee": "agent_email",
        "group": "group_name",
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
            raw["agent_email"] = await self._name_of("agents", raw.get("responder_id"))
            raw["group_name"] = await self._name_of("groups", raw.get("group_id"))
        return self.ticket_from(external_id, raw, url=f"{self.config.root}/a/tickets/{ticket_id}")

    async def _name_of(self, what: str, item_id: Any) -> str | None:
        """An agent's e-mail or a group's name for its id (None when there is none)."""
        if isinstance(item_id, bool) or not isinstance(item_id, int):
            return None
        try:
            response = await self.request("GET", f"/api/v2/{what}/{item_id}", what=what)
        except NotFound:
            return None  # removed since it was set on the ticket: nobody we can name
        found = self.json_of(response)
        path = "contact.email" if what == "agents" else "name"
        return text_of(pick(found, path))

    async def comment_texts(self, external_id: str) -> list[str]:
        ticket_id = self.numeric_id(external_id)
        texts: list[str] = []
        for page in range(1, MAX_PAGES + 1):
            params = {"page": str(page), "per_page": str(PER_PAGE)}
            found = self.json_of(
                await self.request(
                    "GET", f"/api/v2/tickets/{ticket_id}/conversations", params=params
                )
            )
            items = [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []
            texts += [f"{c.get('body_text', '')}\n{c.get('body', '')}" for c in items]
            if len(items) < PER_PAGE:
                break
        return texts

    def native_event(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime
    ) -> WebhookEvent:
        return inbound.parse(
            self.system, self.config, headers, body, closed_words=self.closed_words(), now=now
        )

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
