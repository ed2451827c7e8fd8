"""Fake osTicket HTTP API.

From https://docs.osticket.com/en/latest/Developer%20Documentation/API%20Docs.html and
.../API/Tickets.html: the only resources are ``POST /api/tickets.json`` (create; requires
``email``, ``name``, ``subject``, ``message``, else 400) and ``POST /api/tasks/cron``, with
the ``X-API-Key`` header (401 "API key not authorized" otherwise). No read, no notes.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from tests.connectors.fakes import FakeBase, body_of

API_KEY = "BA00B76BAA30F62E1940B46CC1C3C73C"


@dataclass
class FakeOsTicket(FakeBase):
    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("x-api-key") != API_KEY:
            return httpx.Response(401, text="API key not authorized")
        if request.method == "POST" and request.url.path == "/api/tickets.json":
            body = body_of(request)
            required = ("email", "name", "subject", "message")
            if not isinstance(body, dict) or any(not body.get(k) for k in required):
                return httpx.Response(400, text="Required fields missing")
            return httpx.Response(201, text="602343")
        return httpx.Response(400, text="Unsupported request")
