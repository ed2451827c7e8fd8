"""GLPI: a short session per operation, as the legacy REST API (``apirest.php``) wants it.

``GET initSession`` with ``App-Token`` and ``Authorization: user_token ...`` answers
``{"session_token": ...}``; calls then carry ``Session-Token`` (and the ``App-Token``);
``GET killSession`` ends it. The ticket is ``GET Ticket/{id}?expand_dropdowns=true``; its
requester and technician come from ``GET Ticket/{id}/Ticket_User`` (type 1 requester,
2 assigned), its assigned group from ``GET Ticket/{id}/Group_Ticket`` (type 2). A private
follow-up is ``POST ITILFollowup`` with
``{"input": {"itemtype": "Ticket", "items_id": id, "content": ..., "is_private": 1}}``.
Statuses 1-4 are open (new, processing assigned/planned, pending), 5 solved, 6 closed.
A retried comment is looked for in ``GET Ticket/{id}/ITILFollowup``; GLPI 11's own webhooks
are read by :mod:`broker.connectors.glpi.inbound`.
Docs: https://help.glpi-project.org/documentation/modules/configuration/general/api/api
(the ``apirest.md`` shipped with GLPI).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, ClassVar

import httpx
import structlog

from broker.connectors.base import TicketInfo, WebhookEvent
from broker.connectors.glpi import inbound
from broker.connectors.glpi.config import GlpiConfig
from broker.connectors.http import HttpConnector, text_of
from broker.connectors.settings import ConnectorConfig
from broker.errors import ConnectorError

STATUS = {
    1: "new",
    2: "processing (assigned)",
    3: "processing (planned)",
    4: "pending",
    5: "solved",
    6: "closed",
}
PRIORITY = {1: "very low", 2: "low", 3: "medium", 4: "high", 5: "very high", 6: "major"}
REQUESTER, ASSIGNED = 1, 2

log = structlog.get_logger("broker.connectors.glpi")


def _first(links: Any, kind: int, *keys: str) -> str | None:
    """The first named actor of ``kind`` in a Ticket_User / Group_Ticket answer."""
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("type") == kind:
            for key in keys:
                name = text_of(link.get(key))
                if name:
                    return name
    return None


class GlpiConnector(HttpConnector[GlpiConfig]):
    kind: ClassVar[str] = "glpi"
    config_model: ClassVar[type[ConnectorConfig]] = GlpiConfig
    default_fields: ClassVar[dict[str, str]] = {
        "subject": "name",
        "state": "status_name",
        "priority": "priority_name",
        "category": "itilcategories_id",
        "requester": "requester",
        "assignee": "assignee",
        "group": "assigned_group",
    }
    default_closed: ClassVar[frozenset[str]] = frozenset({"solved", "closed"})

    def auth_headers(self) -> dict[str, str]:
        return {
            "App-Token": self.config.app_token.get_secret_value(),
            "Content-Type": "application/json",
        }

    @asynccontextmanager
    async def session(self) -> AsyncIterator[dict[str, str]]:
        response = await self.request(
            "GET",
            "/initSession",
            what="session",
            headers={"Authorization": f"user_token {self.config.user_token.get_secret_value()}"},
        )
        token = self.json_of(response).get("session_token")
        if not isinstance(token, str) or not token:
            raise ConnectorError(f"{self.system}: initSession returned no session_token")
        headers = {"Session-Token": token}
        try:
            yield headers
        finally:
            # Ending the session is hygiene; a failure here must not hide the real outcome,
            # so it is logged (GLPI expires the session on its own) and not raised.
            try:
                await self.client.request("GET", "/killSession", headers=headers)
            except httpx.HTTPError as exc:
                log.warning(
                    "connectors.glpi_kill_session_failed",
                    system=self.system,
                    error=type(exc).__name__,
                )

    def web_root(self) -> str:
        root = self.config.web_url.rstrip("/") or self.config.root
        return root.removesuffix("/apirest.php")

    async def lookup_ticket(self, external_id: str) -> TicketInfo:
        ticket_id = self.numeric_id(external_id)
        params = {"expand_dropdowns": "true"}
        async with self.session() as headers:
            ticket = self.json_of(
                await self.request("GET", f"/Ticket/{ticket_id}", headers=headers, params=params)
            )
            actors = self.json_of(
                await self.request(
                    "GET", f"/Ticket/{ticket_id}/Ticket_User", headers=headers, params=params
                )
            )
            groups = self.json_of(
                await self.request(
                    "GET", f"/Ticket/{ticket_id}/Group_Ticket", headers=headers, params=params
                )
            )
        raw: dict[str, Any] = dict(ticket) if isinstance(ticket, dict) else {}
        raw["status_name"] = STATUS.get(raw.get("status", 0), str(raw.get("status", "")))
        raw["priority_name"] = PRIORITY.get(raw.get("priority", 0))
        for kind, key in ((REQUESTER, "requester"), (ASSIGNED, "assignee")):
            raw[key] = _first(actors, kind, "users_id", "alternative_email")
        raw["assigned_group"] = _first(groups, ASSIGNED, "groups_id")
        url = f"{self.web_root()}/front/ticket.form.php?id={ticket_id}"
        return self.ticket_from(external_id, raw, url=url)

    async def post_comment(self, external_id: str, text: str, internal: bool = True) -> None:
        ticket_id = self.numeric_id(external_id)
        body = {
            "input": {
                "itemtype": "Ticket",
                "items_id": ticket_id,
                "content": text,
                "is_private": 1 if internal else 0,
            }
        }
        async with self.session() as headers:
            await self.request("POST", "/ITILFollowup", expect=(201,), headers=headers, json=body)

    async def comment_texts(self, external_id: str) -> list[str]:
        ticket_id = self.numeric_id(external_id)
        async with self.session() as headers:
            followups = self.json_of(
                await self.request(
                    "GET", f"/Ticket/{ticket_id}/ITILFollowup", headers=headers,
                    params={"range": "0-999"}, expect=(200, 206),
                )
            )  # fmt: skip
        return [str(f.get("content", "")) for f in followups if isinstance(f, dict)]

    def native_event(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime
    ) -> WebhookEvent:
        return inbound.parse(
            self.system, self.config, headers, body, closed_words=self.closed_words(), now=now
        )

    async def check(self) -> str:
        async with self.session():
            return "ok"
