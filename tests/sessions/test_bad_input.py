"""Bad input to the session API: a 4xx with ``{"error", "detail"}``, and nothing written."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from broker.sessions.models import RemoteSession
from broker.tickets.models import Ticket
from tests.factories import Desk, open_session, session_body


async def counts(app: Any) -> tuple[int, int]:
    async with app.state.sessionmaker() as db:
        sessions = await db.scalar(select(func.count()).select_from(RemoteSession))
        tickets = await db.scalar(select(func.count()).select_from(Ticket))
    return int(sessions or 0), int(tickets or 0)


async def post_raw(client: httpx.AsyncClient, desk: Desk, content: bytes) -> httpx.Response:
    headers = {**desk.headers, "content-type": "application/json"}
    return await client.post("/api/v1/sessions", content=content, headers=headers)


def assert_error(response: httpx.Response, status: int | set[int]) -> dict[str, Any]:
    allowed = status if isinstance(status, set) else {status}
    assert response.status_code in allowed, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail"}
    assert body["detail"]
    return body


async def test_oversized_body(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    body = session_body(desk.device, reason="x" * 2_000_000)
    assert_error(await post_raw(client, desk, json.dumps(body).encode()), 413)
    assert await counts(app) == (0, 0)


async def test_malformed_json(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    for raw in (b'{"ticket": {"system": ', b"\xff\xfe not json", b"[]", b""):
        assert_error(await post_raw(client, desk, raw), {400, 422})
    assert await counts(app) == (0, 0)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"colour": "red"}, "colour"),
        ({"ticket": {"system": "helpdesk", "external_id": "1", "priority": 1}}, "priority"),
        ({"duration_minutes": "30"}, "duration_minutes"),
        ({"duration_minutes": 30.5}, "duration_minutes"),
        ({"duration_minutes": 0}, "duration_minutes"),
        ({"unattended": "yes"}, "unattended"),
        ({"capabilities": []}, "capabilities"),
        ({"capabilities": ["view", "teleport"]}, "capabilities"),
        ({"capabilities": "view"}, "capabilities"),
        ({"reason": 42}, "reason"),
        ({"reason": "Printer broken\x00 again and again"}, "control characters"),
        ({"reason": "Printer broken\nagain and again"}, "control characters"),
        ({"reason": "Printer \u202eevil\u202c broken again"}, "control characters"),
        ({"ticket": {"system": "help desk", "external_id": "1"}}, "system"),
        ({"ticket": {"system": "helpdesk", "external_id": "HD\x07-1"}}, "control characters"),
        ({"ticket": {"system": "helpdesk", "external_id": "   "}}, "blank"),
        ({"ticket": {"system": "helpdesk", "external_id": "x" * 101}}, "external_id"),
        ({"device_id": None}, "device_id"),
    ],
)
async def test_invalid_fields(
    app: Any, client: httpx.AsyncClient, desk: Desk, overrides: dict[str, Any], words: str
) -> None:
    body = session_body(desk.device, **overrides)
    response = await client.post("/api/v1/sessions", json=body, headers=desk.headers)
    error = assert_error(response, 422)
    assert error["error"] == "invalid_request"
    assert words in error["detail"], error
    assert await counts(app) == (0, 0)


async def test_unicode_is_fine(client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(
        client,
        desk,
        reason="Drucker druckt nur noch Kästchen — 打印机 🖨️ ausgefallen",
        ticket={"system": "zammad", "external_id": "Ticket-Ünïcødé-42", "subject": "Drucker ✓"},
    )
    assert created["reason"].startswith("Drucker druckt")
    assert created["ticket"]["external_id"] == "Ticket-Ünïcødé-42"


async def test_bad_query_parameters(client: httpx.AsyncClient, desk: Desk) -> None:
    assert_error(await client.get("/api/v1/sessions?state=flying", headers=desk.headers), 422)
    assert_error(await client.get("/api/v1/sessions?limit=0", headers=desk.headers), 422)
    assert_error(await client.get("/api/v1/sessions?since=yesterday", headers=desk.headers), 422)


async def test_unknown_session(client: httpx.AsyncClient, desk: Desk) -> None:
    body = assert_error(await client.get("/api/v1/sessions/nope", headers=desk.headers), 404)
    assert body["error"] == "not_found"
    assert_error(await client.post("/api/v1/sessions/nope/start", headers=desk.headers), 404)


async def test_action_body_is_closed(client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(client, desk)
    response = await client.post(
        f"/api/v1/sessions/{created['id']}/cancel", json={"why": "x"}, headers=desk.headers
    )
    assert_error(response, 422)
