"""Fake osTicket HTTP API.

From https://docs.osticket.com/en/latest/Developer%20Documentation/API%20Docs.html and
.../API/Tickets.html: the only resources are ``POST /api/tickets.json`` (create; requires
``email``, ``name``, ``subject``, ``message``, else 400) and ``POST /api/tasks/cron``, with
the ``X-API-Key`` header (401 "API key not authorized" otherwise). No read, no notes.

With ``plugin`` set it also serves the "API Endpoints" plugin's calls (osTicket 1.18; shapes
from its ``api_endpoint_description.md``, see fixtures/osticket/ticket_get.http):
``GET /api/tickets-get.php/{number}.json`` (404 ``{"error": "Ticket not found"}``) and
``PATCH /api/tickets-update.php/{number}.json`` with ``note`` (an internal note; type "N" in
the thread).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.connectors.fakes import FakeBase, body_of
from tests.connectors.fixtures import load

API_KEY = "BA00B76BAA30F62E1940B46CC1C3C73C"


@dataclass
class FakeOsTicket(FakeBase):
    plugin: bool = False
    tickets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, number: str, *, subject: str, status: str, staff: str | None) -> None:
        ticket = copy.deepcopy(load("osticket", "ticket_get.http").body)
        ticket.update(number=number, subject=subject, status=status, staff=staff)
        self.tickets[number] = ticket

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("x-api-key") != API_KEY:
            return httpx.Response(401, text="API key not authorized")
        path = request.url.path
        for prefix, method in (
            ("/api/tickets-get.php/", "GET"),
            ("/api/tickets-update.php/", "PATCH"),
        ):
            if self.plugin and path.startswith(prefix) and request.method == method:
                return self._plugin(request, path.removeprefix(prefix).removesuffix(".json"))
        if request.method == "POST" and request.url.path == "/api/tickets.json":
            body = body_of(request)
            required = ("email", "name", "subject", "message")
            if not isinstance(body, dict) or any(not body.get(k) for k in required):
                return httpx.Response(400, text="Required fields missing")
            return httpx.Response(201, text="602343")
        return httpx.Response(400, text="Unsupported request")

    def _plugin(self, request: httpx.Request, number: str) -> httpx.Response:
        ticket = self.tickets.get(number)
        if ticket is None:
            return httpx.Response(404, json={"error": "Ticket not found"})
        if request.method == "PATCH":
            body = body_of(request)
            if not isinstance(body, dict) or not body.get("note"):
                return httpx.Response(400, json={"error": "nothing to update"})
            entry = {
                "id": len(ticket["thread"]) + 1,
                "type": "N",
                "poster": "API",
                "title": body.get("noteTitle", ""),
                "body": body["note"],
                "created": "",
            }
            ticket["thread"].append(entry)  # fmt: skip
            self.notes.append({"ticket": number, "text": body["note"], "internal": True})
            return httpx.Response(200, json={k: ticket[k] for k in ("id", "number", "status")})
        return httpx.Response(200, json=ticket)
