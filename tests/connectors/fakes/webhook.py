"""A fake receiver of our generic signed webhooks (and a ticket lookup endpoint).

It verifies every delivery with :func:`broker.connectors.signing.verify` (as a receiver
following docs/CONNECTORS.md would), can fail the first n deliveries, and records the
order in which events arrived.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from broker.connectors import signing
from broker.errors import NotAuthenticated
from tests.connectors.fakes import FakeBase

SECRET = "webhook-shared-secret-0123456789"


@dataclass
class FakeReceiver(FakeBase):
    tickets: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    refuse_next: int = 0  # answer 503 to the next n deliveries

    def add(self, ticket_id: str, *, subject: str, state: str) -> None:
        self.tickets[ticket_id] = {
            "subject": subject,
            "state": state,
            "requester": "Erika Mustermann",
            "assignee": "tom",
            "url": f"https://helpdesk.example/tickets/{ticket_id}",
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path.startswith("/tickets/"):
            ticket = self.tickets.get(path.rsplit("/", 1)[1])
            return httpx.Response(404) if ticket is None else httpx.Response(200, json=ticket)
        if request.method == "POST" and path == "/hook":
            try:
                signing.verify(SECRET, request.headers, request.content, window_seconds=300)
            except NotAuthenticated:
                return httpx.Response(401)
            if self.refuse_next > 0:
                self.refuse_next -= 1
                return httpx.Response(503)
            event = json.loads(request.content)
            self.received.append(event)
            if event["type"] == "ticket.comment":
                self.notes.append(
                    {
                        "ticket": event["ticket"]["id"],
                        "text": event["text"],
                        "internal": event["data"]["internal"],
                    }
                )
            return httpx.Response(204)
        return httpx.Response(404)
