"""Races: two approvals of one consent, and many requests racing past the concurrency limit.

Each request runs through its own client and database session, concurrently in one loop
(``asyncio.gather``), on SQLite (``FOR UPDATE`` starts the FIFO write step) and PostgreSQL
(row locks and compare-and-set).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import func, select

from broker.sessions.models import RemoteSession
from tests.factories import (
    Desk,
    audit_events,
    bearer,
    consent_token,
    make_token,
    open_session,
    session_body,
)


@asynccontextmanager
async def own_client(app: Any, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://broker.test") as c:
        yield c


async def test_two_approvals_exactly_one_wins(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    created = await open_session(client, desk)
    token = consent_token(created)

    async def approve(ip: str, name: str) -> httpx.Response:
        async with own_client(app, ip) as c:
            return await c.post(
                f"/api/v1/consent/{token}/decision", json={"decision": "approve", "name": name}
            )

    results = await asyncio.gather(approve("192.0.2.1", "Erika"), approve("192.0.2.2", "Max"))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 409], [r.text for r in results]
    events = await audit_events(app, "helpdesk:HD-4711")
    assert [t for t, _ in events].count("session.approved") == 1
    assert [t for t, _ in events].count("consent.decided") == 1


async def test_approve_and_deny_race(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(client, desk)
    token = consent_token(created)

    async def decide(decision: str) -> httpx.Response:
        async with own_client(app, "192.0.2.3") as c:
            return await c.post(
                f"/api/v1/consent/{token}/decision", json={"decision": decision, "name": "E"}
            )

    results = await asyncio.gather(decide("approve"), decide("deny"))
    assert sorted(r.status_code for r in results) == [200, 409]
    winner = next(r for r in results if r.status_code == 200).json()["state"]
    got = await client.get(f"/api/v1/sessions/{created['id']}", headers=desk.headers)
    assert got.json()["state"] == winner


async def test_racing_requests_respect_the_limit(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    # One token per request: a shared token's row (last_used_at) would serialise them.
    tokens = [await make_token(app, desk.tech) for _ in range(6)]

    async def request(n: int) -> httpx.Response:
        body = session_body(desk.device, ticket={"system": "helpdesk", "external_id": f"R-{n}"})
        async with own_client(app, "192.0.2.9") as c:
            return await c.post("/api/v1/sessions", json=body, headers=bearer(tokens[n]))

    results = await asyncio.gather(*(request(n) for n in range(6)))
    statuses = Counter(r.status_code for r in results)
    assert statuses == {201: 2, 403: 4}, [r.text for r in results]
    async with app.state.sessionmaker() as db:
        count = await db.scalar(
            select(func.count())
            .select_from(RemoteSession)
            .where(RemoteSession.technician_id == desk.tech.id)
        )
    assert count == 2
