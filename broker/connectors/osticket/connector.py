"""osTicket: what its HTTP API allows, and what it does not.

osTicket's API (``X-API-Key`` header, key bound to the caller's IP) supports creating
tickets (``POST /api/tickets.json``) and running cron (``POST /api/tasks/cron``) only:
there is no call to read a ticket and none to add a note or reply. So this connector
takes the ticket as typed (``verified=False``, like standalone), queues no comments, and
accepts our signed webhook for state changes (sent by a plugin or a relay). Reachability
is checked with an empty ``POST /api/tickets.json``: a valid key gets a validation error
(400), a wrong key or IP gets 401.
Docs: https://docs.osticket.com/en/latest/Developer%20Documentation/API%20Docs.html and
https://docs.osticket.com/en/latest/Developer%20Documentation/API/Tickets.html
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import SecretStr

from broker.connectors.base import TicketInfo
from broker.connectors.http import HttpConnector
from broker.connectors.settings import ConnectorConfig
from broker.errors import ConnectorError


class OsTicketConfig(ConnectorConfig):
    kind: Literal["osticket"] = "osticket"
    api_key: SecretStr
    ticket_url: str = "{base_url}/scp/tickets.php?id={external_id}"


class OsTicketConnector(HttpConnector[OsTicketConfig]):
    kind: ClassVar[str] = "osticket"
    config_model: ClassVar[type[ConnectorConfig]] = OsTicketConfig
    can_lookup: ClassVar[bool] = False
    can_comment: ClassVar[bool] = False

    def auth_headers(self) -> dict[str, str]:
        return {"X-API-Key": self.config.api_key.get_secret_value()}

    async def lookup_ticket(self, external_id: str) -> TicketInfo:
        url = self.config.ticket_url.format(base_url=self.config.root, external_id=external_id)
        return TicketInfo(system=self.system, external_id=external_id, url=url, verified=False)

    async def post_comment(self, external_id: str, text: str, internal: bool = True) -> None:
        raise ConnectorError(f"{self.system}: the osTicket API cannot add notes to a ticket")

    async def check(self) -> str:
        response = await self.request(
            "POST", "/api/tickets.json", expect=(400, 401, 403), what="API", content=b"{}"
        )
        if response.status_code != 400:
            raise ConnectorError(f"{self.system}: API key refused (HTTP {response.status_code})")
        return "ok"
