"""Bad input to the tickets API: a 4xx with ``{"error", "detail"}``, and nothing written."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.factories import audit_events
from tests.tickets.test_api import API, create, ticket_body, ticket_count


def assert_error(response: httpx.Response, status: int | set[int]) -> dict[str, Any]:
    allowed = status if isinstance(status, set) else {status}
    assert response.status_code in allowed, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail"}
    assert body["detail"]
    return body


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"priority": "high"}, "priority"),
        ({"system": "help desk"}, "system"),
        ({"system": "x" * 51}, "system"),
        ({"system": 7}, "system"),
        ({"external_id": ""}, "external_id"),
        ({"external_id": "   "}, "blank"),
        ({"external_id": "x" * 101}, "external_id"),
        ({"external_id": "HD\x00-1"}, "control characters"),
        ({"external_id": "HD-\u202e1"}, "control characters"),
        ({"external_id": 4711}, "external_id"),
        ({"subject": "Printer\noffline"}, "control characters"),
        ({"subject": "x" * 501}, "subject"),
        ({"subject": None}, "subject"),
        ({"requester": ["Erika"]}, "requester"),
        ({"state": "in\tprogress"}, "state"),
        ({"state": "x" * 31}, "state"),
        ({"url": "javascript:alert(1)"}, "url"),
        ({"url": "https://desk.example.test/" + "x" * 1000}, "url"),
    ],
)
async def test_invalid_fields(
    app: Any,
    client: httpx.AsyncClient,
    tech: dict[str, str],
    overrides: dict[str, Any],
    words: str,
) -> None:
    response = await client.post(API, json=ticket_body(**overrides), headers=tech)
    error = assert_error(response, 422)
    assert error["error"] == "invalid_request"
    assert words in error["detail"], error
    assert await ticket_count(app) == 0


@pytest.mark.parametrize("missing", ["system", "external_id", "subject", "requester"])
async def test_required_fields(
    app: Any, client: httpx.AsyncClient, tech: dict[str, str], missing: str
) -> None:
    body = ticket_body()
    del body[missing]
    error = assert_error(await client.post(API, json=body, headers=tech), 422)
    assert missing in error["detail"]
    assert await ticket_count(app) == 0


async def test_malformed_and_oversized_bodies(
    app: Any, client: httpx.AsyncClient, tech: dict[str, str]
) -> None:
    headers = {**tech, "content-type": "application/json"}
    for raw in (b'{"system": ', b"\xff\xfe", b"[]", b"", b"null"):
        assert_error(await client.post(API, content=raw, headers=headers), {400, 422})
    huge = json.dumps(ticket_body(subject="x" * 2_000_000)).encode()
    assert_error(await client.post(API, content=huge, headers=headers), 413)
    assert await ticket_count(app) == 0


@pytest.mark.parametrize(
    "path", ["/help%20desk/HD-1", "/helpdesk/HD%00-1", "/helpdesk/HD%E2%80%AE1", "/h/" + "x" * 101]
)
async def test_bad_references_in_the_path(
    app: Any, client: httpx.AsyncClient, tech: dict[str, str], path: str
) -> None:
    assert_error(await client.get(API + path, headers=tech), 422)
    assert_error(await client.patch(API + path, json={"state": "closed"}, headers=tech), 422)


async def test_bad_list_queries(client: httpx.AsyncClient, tech: dict[str, str]) -> None:
    for params in (
        {"q": "vpn\x00"},
        {"q": "x" * 201},
        {"system": "help desk"},
        {"state": "a\nb"},
    ):
        assert_error(await client.get(API, params=params, headers=tech), 422)


async def test_bad_update_writes_nothing(
    app: Any, client: httpx.AsyncClient, tech: dict[str, str]
) -> None:
    await create(client, tech)
    response = await client.patch(
        f"{API}/helpdesk/HD-4711",
        json={"subject": "New subject", "state": "closed", "colour": "red"},
        headers=tech,
    )
    assert "colour" in assert_error(response, 422)["detail"]
    got = (await client.get(f"{API}/helpdesk/HD-4711", headers=tech)).json()
    assert got["subject"] == "Printer offline"
    assert got["state"] == "open"
    assert [e for e, _ in await audit_events(app, "helpdesk:HD-4711")] == ["ticket.created"]


async def test_anonymous_is_401(app: Any, client: httpx.AsyncClient) -> None:
    assert_error(await client.post(API, json=ticket_body()), 401)
    assert_error(await client.get(API), 401)
    assert await ticket_count(app) == 0
