"""Fake Freshdesk (API v2).

Shapes from https://developers.freshdesk.com/api/#view_a_ticket (``GET /api/v2/tickets/[id]
?include=requester`` → ``subject``, ``status`` 2 open/3 pending/4 resolved/5 closed,
``priority`` 1-4, ``responder_id``, ``group_id``, ``type``, ``requester: {name, email}``),
https://developers.freshdesk.com/api/#add_note_to_a_ticket (``POST /api/v2/tickets/[id]/
notes`` with ``body`` (HTML) and ``private`` → 201), https://developers.freshdesk.com/
api/#list_all_ticket_notes (``GET /api/v2/tickets/[id]/conversations?page=&per_page=`` →
``[{"body", "body_text", "private"}]``), https://developers.freshdesk.com/api/#view_agent
(``{"id", "contact": {"name", "email"}}``), https://developers.freshdesk.com/api/#view_group
(``{"id", "name"}``) and https://developers.freshdesk.com/api/#authentication (basic auth,
API key as user, ``X`` as password).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.connectors.fakes import FakeBase, body_of

API_KEY = "freshdesk-api-key"


AGENTS = {
    6000130414: {"id": 6000130414, "contact": {"name": "Tom Tech", "email": "tom@acme.example"}}
}
GROUPS = {6000192811: {"id": 6000192811, "name": "Service Desk"}}


@dataclass
class FakeFreshdesk(FakeBase):
    tickets: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, ticket_id: int, *, subject: str, status: int) -> None:
        self.tickets[ticket_id] = {
            "id": ticket_id,
            "subject": subject,
            "status": status,
            "priority": 3,
            "responder_id": 6000130414,
            "group_id": 6000192811,
            "type": "Incident",
            "requester_id": 6000130000,
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        expected = "Basic " + base64.b64encode(f"{API_KEY}:X".encode()).decode()
        if request.headers.get("authorization") != expected:
            return httpx.Response(401, json={"code": "invalid_credentials"})
        path = request.url.path
        if request.method == "GET" and path == "/api/v2/agents/me":
            return httpx.Response(200, json={"id": 1})
        parts = path.strip("/").split("/")
        if request.method == "GET" and len(parts) == 4 and parts[2] in ("agents", "groups"):
            table = AGENTS if parts[2] == "agents" else GROUPS
            found = table.get(int(parts[3])) if parts[3].isdigit() else None
            if found is None:
                return httpx.Response(404, json={"code": "not_found"})
            return httpx.Response(200, json=found)
        if parts[:3] != ["api", "v2", "tickets"] or len(parts) < 4:
            return httpx.Response(404, json={"code": "no_route"})
        ticket = self.tickets.get(int(parts[3]))
        if ticket is None:
            return httpx.Response(404, json={"code": "not_found"})
        if request.method == "GET" and len(parts) == 4:
            answer = dict(ticket)
            if request.url.params.get("include") == "requester":
                answer["requester"] = {"name": "Erika Mustermann", "email": "erika@example.test"}
            return httpx.Response(200, json=answer)
        if request.method == "GET" and parts[4:] == ["conversations"]:
            page = int(request.url.params.get("page", "1"))
            per_page = int(request.url.params.get("per_page", "30"))
            mine = [n for n in self.notes if n["ticket"] == parts[3]]
            chunk = mine[(page - 1) * per_page : page * per_page]
            return httpx.Response(
                200,
                json=[{"id": i, "body": n["text"], "body_text": None, "private": n["internal"]}
                      for i, n in enumerate(chunk)],
            )  # fmt: skip
        if request.method == "POST" and parts[4:] == ["notes"]:
            body = body_of(request)
            if not isinstance(body, dict) or not body.get("body"):
                return httpx.Response(400, json={"description": "Validation failed"})
            private = body.get("private", True)
            self.notes.append({"ticket": parts[3], "text": body["body"], "internal": private})
            return httpx.Response(201, json={"id": 1, "body": body["body"], "private": private})
        return httpx.Response(405, json={"code": "method_not_allowed"})
