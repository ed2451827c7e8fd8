"""Fake GLPI (legacy REST API, ``apirest.php``).

Shapes from GLPI's ``apirest.md`` (https://help.glpi-project.org/documentation/modules/
configuration/general/api/api): ``GET initSession`` with ``App-Token`` and
``Authorization: user_token ...`` → ``{"session_token": ...}``; every other call needs
``Session-Token`` (else 401 ``["ERROR_SESSION_TOKEN_INVALID", ...]``); ``GET Ticket/:id`` (404
``["ERROR_ITEM_NOT_FOUND", ...]``), the sub-items ``GET Ticket/:id/Ticket_User`` and
``GET Ticket/:id/Group_Ticket`` and ``GET Ticket/:id/ITILFollowup`` ("Get sub items"; type 1
requester, 2 assigned, 3 observer),
``POST ITILFollowup`` with ``{"input": {...}}`` → 201 ``{"id", "message"}``, and
``GET killSession``. Ticket status: 1 new ... 5 solved, 6 closed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.connectors.fakes import FakeBase, body_of

APP_TOKEN = "glpi-app-token"
USER_TOKEN = "glpi-user-token"
PREFIX = "/apirest.php"


@dataclass
class FakeGlpi(FakeBase):
    tickets: dict[int, dict[str, Any]] = field(default_factory=dict)
    actors: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    groups: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    sessions: set[str] = field(default_factory=set)
    killed: list[str] = field(default_factory=list)

    def add(
        self,
        ticket_id: int,
        *,
        title: str,
        status: int,
        tech: str | None = None,
        group: str | None = None,
    ) -> None:
        self.tickets[ticket_id] = {
            "id": ticket_id,
            "name": title,
            "status": status,
            "priority": 3,
            "itilcategories_id": "Hardware > Laptop",
            "users_id_recipient": "glpi",
        }
        people = [{"id": 1, "tickets_id": ticket_id, "users_id": "post-only", "type": 1}]
        if tech:
            people.append({"id": 2, "tickets_id": ticket_id, "users_id": tech, "type": 2})
        self.actors[ticket_id] = people
        # An observer group first: only type 2 (assigned) may count as the ticket's group.
        self.groups[ticket_id] = [
            {"id": 7, "tickets_id": ticket_id, "groups_id": "Observers", "type": 3}
        ]
        if group:
            self.groups[ticket_id].append(
                {"id": 8, "tickets_id": ticket_id, "groups_id": group, "type": 2}
            )

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("app-token") != APP_TOKEN:
            return httpx.Response(400, json=["ERROR_WRONG_APP_TOKEN_PARAMETER", "app token"])
        path = request.url.path.removeprefix(PREFIX)
        if path == "/initSession":
            if request.headers.get("authorization") != f"user_token {USER_TOKEN}":
                return httpx.Response(401, json=["ERROR_GLPI_LOGIN_USER_TOKEN", "bad token"])
            token = secrets.token_hex(8)
            self.sessions.add(token)
            return httpx.Response(200, json={"session_token": token})
        token = request.headers.get("session-token", "")
        if token not in self.sessions:
            return httpx.Response(401, json=["ERROR_SESSION_TOKEN_INVALID", "session"])
        if path == "/killSession":
            self.sessions.discard(token)
            self.killed.append(token)
            return httpx.Response(200, json=[])
        parts = path.strip("/").split("/")
        if request.method == "GET" and parts[0] == "Ticket" and len(parts) in (2, 3):
            ticket_id = int(parts[1])
            if ticket_id not in self.tickets:
                return httpx.Response(404, json=["ERROR_ITEM_NOT_FOUND", "not found"])
            if len(parts) == 3 and parts[2] == "Ticket_User":
                return httpx.Response(200, json=self.actors[ticket_id])
            if len(parts) == 3 and parts[2] == "Group_Ticket":
                return httpx.Response(200, json=self.groups[ticket_id])
            if len(parts) == 3 and parts[2] == "ITILFollowup":
                followups = [
                    {"id": i + 1, "itemtype": "Ticket", "items_id": ticket_id,
                     "content": n["text"], "is_private": int(n["internal"])}
                    for i, n in enumerate(self.notes)
                    if n["ticket"] == str(ticket_id)
                ]  # fmt: skip
                return httpx.Response(200, json=followups)
            return httpx.Response(200, json=self.tickets[ticket_id])
        if request.method == "POST" and path == "/ITILFollowup":
            body = body_of(request)
            data = body.get("input") if isinstance(body, dict) else None
            if (
                not isinstance(data, dict)
                or data.get("itemtype") != "Ticket"
                or data.get("is_private") not in (0, 1)
                or not data.get("content")
            ):
                return httpx.Response(400, json=["ERROR_BAD_ARRAY", "input"])
            if data.get("items_id") not in self.tickets:
                return httpx.Response(400, json=["ERROR_GLPI_ADD", "no such ticket"])
            self.notes.append(
                {
                    "ticket": str(data["items_id"]),
                    "text": data["content"],
                    "internal": data["is_private"] == 1,
                }
            )
            return httpx.Response(201, json={"id": len(self.notes), "message": ""})
        return httpx.Response(400, json=["ERROR_RESOURCE_NOT_FOUND_NOR_COMMONDBTM", path])
