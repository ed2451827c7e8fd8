"""osTicket: what its HTTP API allows, and what the "API Endpoints" plugin adds.

osTicket's own API (``X-API-Key`` header, key bound to the caller's IP) creates tickets
(``POST /api/tickets.json``) and runs cron, nothing else: no call reads a ticket or adds a
note, and osTicket sends no webhooks. With ``api = "core"`` (the default) the connector
takes the ticket as typed (``verified=False``, like standalone), queues no comments, and
accepts our signed webhook from a relay. Reachability is checked with an empty
``POST /api/tickets.json``: a valid key gets a validation error (400), a wrong one 401.

With ``api = "api-endpoints"`` (osTicket 1.18 with the "API Endpoints" plugin by Markus
Michalski, which extends the same API keys) the broker reads the ticket with
``GET /api/tickets-get.php/{number}.json`` (status, staff, department, thread), so the
request gate and the slow poll that watches running sessions work (osTicket has no
webhooks: the poll is how a closed or reassigned ticket ends its sessions), and writes
internal notes with ``PATCH /api/tickets-update.php/{number}.json {"note", "noteTitle",
"noteFormat"}``; a retried note is looked for in the thread. The external id is the
ticket *number*.
Docs: https://docs.osticket.com/en/latest/Developer%20Documentation/API%20Docs.html,
https://docs.osticket.com/en/latest/Developer%20Documentation/API/Tickets.html and the
plugin's ``api_endpoint_description.md`` (github.com/markus-michalski/osticket-api-endpoints).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import quote

from pydantic import SecretStr

from broker.connectors.base import TicketInfo
from broker.connectors.http import HttpConnector, pick
from broker.connectors.settings import ConnectorConfig
from broker.errors import ConnectorError

NOTE_TITLE = "Remote support (supportbroker)"


class OsTicketConfig(ConnectorConfig):
    kind: Literal["osticket"] = "osticket"
    api_key: SecretStr
    ticket_url: str = "{base_url}/scp/tickets.php?id={external_id}"
    api: Literal["core", "api-endpoints"] = "core"


class OsTicketConnector(HttpConnector[OsTicketConfig]):
    kind: ClassVar[str] = "osticket"
    config_model: ClassVar[type[ConnectorConfig]] = OsTicketConfig
    default_fields: ClassVar[dict[str, str]] = {
        "subject": "subject",
        "requester": "user.email",
        "state": "status",
        "assignee": "staff",
        "group": "department",
        "priority": "priority",
        "category": "topic",
    }
    default_closed: ClassVar[frozenset[str]] = frozenset(
        {"resolved", "closed", "archived", "deleted"}
    )

    @property
    def can_lookup(self) -> bool:  # type: ignore[override]
        return self.config.api == "api-endpoints"

    @property
    def can_comment(self) -> bool:  # type: ignore[override]
        return self.config.api == "api-endpoints"

    def auth_headers(self) -> dict[str, str]:
        return {"X-API-Key": self.config.api_key.get_secret_value()}

    @staticmethod
    def number(external_id: str) -> str:
        return quote(external_id.strip(), safe="")

    def _url(self, external_id: str) -> str:
        return self.config.ticket_url.format(base_url=self.config.root, external_id=external_id)

    async def _ticket(self, external_id: str) -> Any:
        path = f"/api/tickets-get.php/{self.number(external_id)}.json"
        return self.json_of(await self.request("GET", path))

    async def lookup_ticket(self, external_id: str) -> TicketInfo:
        if not self.can_lookup:
            url = self._url(external_id)
            return TicketInfo(system=self.system, external_id=external_id, url=url, verified=False)
        raw = await self._ticket(external_id)
        return self.ticket_from(external_id, raw, url=self._url(external_id))

    async def post_comment(self, external_id: str, text: str, internal: bool = True) -> None:
        if not self.can_comment:
            raise ConnectorError(f"{self.system}: the osTicket API cannot add notes to a ticket")
        await self.request(
            "PATCH",
            f"/api/tickets-update.php/{self.number(external_id)}.json",
            json={
                "note": text,
                "noteTitle": "Remote support (supportbroker)",
                "noteFormat": "text",
            },
        )

    async def comment_texts(self, external_id: str) -> list[str]:
        if not self.can_comment:
            return []
        thread = pick(await self._ticket(external_id), "thread")
        return [str(e.get("body", "")) for e in thread or [] if isinstance(e, dict)]

    async def check(self) -> str:
        response = await self.request(
            "POST", "/api/tickets.json", expect=(400, 401, 403), what="API", content=b"{}"
        )
        if response.status_code != 400:
            raise ConnectorError(f"{self.system}: API key refused (HTTP {response.status_code})")
        return "ok"
