"""Policy rules that gate a session request: each is a 403 with a clear message, an audited
``policy.denied`` event, and no session written."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from broker.auth.models import User
from broker.sessions.models import RemoteSession
from broker.tickets.models import Ticket
from tests.factories import (
    Desk,
    audit_events,
    make_desk,
    make_device,
    make_group,
    open_session,
    request_session,
)

REF = "helpdesk:HD-4711"


async def session_count(app: Any) -> int:
    async with app.state.sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(RemoteSession)) or 0)


async def assert_denied(
    app: Any, response: httpx.Response, rule: str, words: str, ref: str = REF
) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "policy_denied"
    assert words in response.json()["detail"]
    denied = [p for t, p in await audit_events(app, ref) if t == "policy.denied"]
    assert denied, "policy.denied must be audited"
    assert denied[-1]["data"]["rule"] == rule


async def test_reason_missing(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    body = {"reason": "   "}
    await assert_denied(
        app, await request_session(client, desk, **body), "reason_required", "reason"
    )
    from tests.factories import session_body

    no_reason = session_body(desk.device)
    del no_reason["reason"]
    response = await client.post("/api/v1/sessions", json=no_reason, headers=desk.headers)
    await assert_denied(app, response, "reason_required", "reason is required")
    assert await session_count(app) == 0


async def test_reason_too_short(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    response = await request_session(client, desk, reason="fix it   ")
    await assert_denied(app, response, "reason_too_short", "at least 10 characters")
    assert await session_count(app) == 0


async def test_device_outside_groups(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    foreign_group = await make_group(app, [])
    foreign = await make_device(app, foreign_group, name="ceo-laptop")
    response = await request_session(client, desk, device_id=foreign.id)
    await assert_denied(app, response, "device_outside_groups", "ceo-laptop")
    assert await session_count(app) == 0


async def test_unknown_device(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    response = await request_session(client, desk, device_id="no-such-device")
    assert response.status_code == 404
    assert await session_count(app) == 0


async def test_concurrency_limit(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    await open_session(client, desk, ticket={"system": "helpdesk", "external_id": "1"})
    await open_session(client, desk, ticket={"system": "helpdesk", "external_id": "2"})
    response = await request_session(client, desk)
    await assert_denied(app, response, "concurrency_limit", "the limit is 2")
    assert await session_count(app) == 2


async def test_concurrency_limit_per_user_override(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    async with app.state.sessionmaker() as db:
        await db.execute(
            update(User).where(User.id == desk.tech.id).values(max_concurrent_sessions=1)
        )
        await db.commit()
    first = await open_session(client, desk, ticket={"system": "helpdesk", "external_id": "1"})
    await assert_denied(app, await request_session(client, desk), "concurrency_limit", "limit is 1")
    # A finished session frees its slot.
    await client.post(f"/api/v1/sessions/{first['id']}/cancel", headers=desk.headers)
    assert (await request_session(client, desk)).status_code == 201


async def test_closed_ticket(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    async with app.state.sessionmaker() as db:
        db.add(Ticket(system="helpdesk", external_id="HD-4711", subject="old", state="closed"))
        await db.commit()
    await assert_denied(app, await request_session(client, desk), "ticket_closed", "is closed")
    assert await session_count(app) == 0


async def test_unattended_not_allowed(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    response = await request_session(client, desk, unattended=True)
    await assert_denied(app, response, "unattended_not_allowed", "does not allow unattended")
    assert await session_count(app) == 0


async def test_unattended_allowed_is_recorded(app: Any, client: httpx.AsyncClient) -> None:
    desk = await make_desk(app, unattended_allowed=True)
    created = await open_session(client, desk, unattended=True)
    assert created["state"] == "approved"
    assert created["unattended"] is True


async def test_only_technicians_request(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    from tests.factories import bearer, make_token, make_user, session_body

    for role in ("admin", "auditor"):
        user, _ = await make_user(app, role)
        token = await make_token(app, user)
        response = await client.post(
            "/api/v1/sessions", json=session_body(desk.device), headers=bearer(token)
        )
        assert response.status_code == 403, role
    anonymous = await client.post("/api/v1/sessions", json=session_body(desk.device))
    assert anonymous.status_code == 401
    assert await session_count(app) == 0


async def test_duration_over_maximum(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    response = await request_session(client, desk, duration_minutes=481)
    assert response.status_code == 422
    assert "480" in response.json()["detail"]
    assert await session_count(app) == 0


@pytest.mark.parametrize("settings_overrides", [{"reason_min_length": 30}])
async def test_reason_min_length_is_configurable(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    # 29 characters: long enough for the default of 10, too short for the configured 30.
    response = await request_session(client, desk, reason="Printer offline since Monday.")
    await assert_denied(app, response, "reason_too_short", "at least 30 characters")
    assert await session_count(app) == 0
    long_enough = "Printer offline since Monday, driver crash"
    assert (await request_session(client, desk, reason=long_enough)).status_code == 201


@pytest.mark.parametrize("settings_overrides", [{"max_concurrent_sessions": 3}])
async def test_concurrency_limit_is_configurable(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    for n in range(3):
        await open_session(client, desk, ticket={"system": "helpdesk", "external_id": f"C-{n}"})
    response = await request_session(client, desk)
    await assert_denied(app, response, "concurrency_limit", "the limit is 3")
    assert await session_count(app) == 3
