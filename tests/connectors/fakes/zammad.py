"""Fake Zammad (REST API v1).

Shapes from https://docs.zammad.org/en/latest/api/ticket/index.html (ticket show; with
``expand=true`` the relations come as names: ``state``, ``owner``, ``customer``, ``group``,
``priority``), https://docs.zammad.org/en/latest/api/ticket/articles.html (``POST
/api/v1/ticket_articles`` with ``ticket_id``, ``body``, ``type: note``, ``internal``; answers
201 with the article; ``GET /api/v1/ticket_articles/by_ticket/{ticket_id}`` lists a ticket's
articles with their ``body``) and https://docs.zammad.org/en/latest/api/intro.html
(``Authorization: Token token=...``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.connectors.fakes import FakeBase, body_of

TOKEN = "zammad-token-123"


@dataclass
class FakeZammad(FakeBase):
    tickets: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, ticket_id: int, *, title: str, state: str, owner: str = "-") -> None:
        self.tickets[ticket_id] = {
            "id": ticket_id,
            "number": str(31000 + ticket_id),
            "title": title,
            "group_id": 1,
            "group": "Users",
            "state_id": 2,
            "state": state,
            "priority_id": 2,
            "priority": "2 normal",
            "owner_id": 1,
            "owner": owner,
            "customer_id": 2,
            "customer": "nicole.braun@zammad.org",
            "type": None,
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Token token={TOKEN}":
            return httpx.Response(401, json={"error": "authentication failed"})
        path = request.url.path
        if request.method == "GET" and path == "/api/v1/users/me":
            return httpx.Response(200, json={"id": 3, "login": "api"})
        if request.method == "GET" and path.startswith("/api/v1/tickets/"):
            if request.url.params.get("expand") != "true":
                return httpx.Response(400, json={"error": "test fake wants expand=true"})
            ticket = self.tickets.get(int(path.rsplit("/", 1)[1]))
            if ticket is None:
                return httpx.Response(404, json={"error": "Couldn't find Ticket"})
            return httpx.Response(200, json=ticket)
        if request.method == "GET" and path.startswith("/api/v1/ticket_articles/by_ticket/"):
            ticket_id = path.rsplit("/", 1)[1]
            if not ticket_id.isdigit() or int(ticket_id) not in self.tickets:
                return httpx.Response(404, json={"error": "Couldn't find Ticket"})
            articles = [
                {"id": i + 1, "ticket_id": int(n["ticket"]), "body": n["text"], "type": "note"}
                for i, n in enumerate(self.notes)
                if n["ticket"] == ticket_id
            ]
            return httpx.Response(200, json=articles)
        if request.method == "POST" and path == "/api/v1/ticket_articles":
            body = body_of(request)
            if (
                not isinstance(body, dict)
                or body.get("type") != "note"
                or not isinstance(body.get("ticket_id"), int)
                or not isinstance(body.get("internal"), bool)
                or not body.get("body")
            ):
                return httpx.Response(422, json={"error": "invalid article"})
            if body["ticket_id"] not in self.tickets:
                return httpx.Response(404, json={"error": "Couldn't find Ticket"})
            self.notes.append(
                {
                    "ticket": str(body["ticket_id"]),
                    "text": body["body"],
                    "internal": body["internal"],
                }
            )
            return httpx.Response(201, json={"id": len(self.notes), **body})
        return httpx.Response(404, json={"error": "no route"})
