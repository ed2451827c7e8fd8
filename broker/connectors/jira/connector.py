"""Jira Service Management: ``GET /rest/api/2/issue/{key}``, internal comments via servicedeskapi.

Auth: e-mail + API token as HTTP basic (Cloud) or, without ``email``, a personal access
token as ``Bearer`` (Data Center). A comment is ``POST /rest/servicedeskapi/request/{key}/
comment`` with ``{"body": ..., "public": false}`` (internal: agents only). A ticket is closed
when its status category is ``done`` unless ``closed_states`` names statuses explicitly.
A retried comment is looked for in ``GET /rest/servicedeskapi/request/{key}/comment``
(paged); Jira's own webhooks are read by :mod:`broker.connectors.jira.inbound`.
Docs: https://developer.atlassian.com/cloud/jira/service-desk/rest/api-group-request/
(create request comment) and https://developer.atlassian.com/cloud/jira/platform/rest/v2/
api-group-issues/ (get issue).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from broker.connectors.base import TicketInfo, WebhookEvent
from broker.connectors.http import HttpConnector, pick
from broker.connectors.jira import inbound
from broker.connectors.jira.config import JiraConfig
from broker.connectors.settings import ConnectorConfig

FIELDS = "summary,status,assignee,reporter,priority,issuetype,components"
PAGE = 50
MAX_PAGES = 40  # 2,000 comments: enough for any ticket a session is written back to


class JiraConnector(HttpConnector[JiraConfig]):
    kind: ClassVar[str] = "jira"
    config_model: ClassVar[type[ConnectorConfig]] = JiraConfig
    default_fields: ClassVar[dict[str, str]] = {
        "subject": "fields.summary",
        "requester": "fields.reporter",
        "state": "fields.status.name",
        "assignee": "fields.assignee",
        "priority": "fields.priority.name",
        "category": "fields.issuetype.name",
    }

    def auth(self) -> httpx.Auth | None:
        if self.config.email:
            return httpx.BasicAuth(self.config.email, self.config.api_token.get_secret_value())
        return None

    def auth_headers(self) -> dict[str, str]:
        if self.config.email:
            return {}
        return {"Authorization": f"Bearer {self.config.api_token.get_secret_value()}"}

    @staticmethod
    def key(external_id: str) -> str:
        return quote(external_id.strip().upper(), safe="")

    async def lookup_ticket(self, external_id: str) -> TicketInfo:
        key = self.key(external_id)
        response = await self.request("GET", f"/rest/api/2/issue/{key}", params={"fields": FIELDS})
        raw: Any = self.json_of(response)
        info = self.ticket_from(external_id, raw, url=f"{self.config.root}/browse/{key}")
        if self.config.closed_states is None:
            done = pick(raw, "fields.status.statusCategory.key") == "done"
            info = replace(info, state="closed" if done else "open")
        return info

    async def post_comment(self, external_id: str, text: str, internal: bool = True) -> None:
        await self.request(
            "POST",
            f"/rest/servicedeskapi/request/{self.key(external_id)}/comment",
            expect=(201,),
            json={"body": text, "public": not internal},
        )

    async def comment_texts(self, external_id: str) -> list[str]:
        path = f"/rest/servicedeskapi/request/{self.key(external_id)}/comment"
        texts: list[str] = []
        for page in range(MAX_PAGES):
            params = {"start": str(page * PAGE), "limit": str(PAGE), "internal": "true"}
            answer = self.json_of(await self.request("GET", path, params=params))
            values = answer.get("values") if isinstance(answer, dict) else None
            texts += [str(v.get("body", "")) for v in values or [] if isinstance(v, dict)]
            if not isinstance(answer, dict) or answer.get("isLastPage", True) or not values:
                break
        return texts

    def native_event(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime
    ) -> WebhookEvent:
        closed = self.closed_states() if self.config.closed_states is not None else None
        return inbound.parse(self.system, self.config, headers, body, closed_words=closed, now=now)

    async def check(self) -> str:
        await self.request("GET", "/rest/api/2/myself", what="user")
        return "ok"
