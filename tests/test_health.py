"""``/healthz``, ``/readyz`` (database reachable, migrations at head) and ``/metrics``."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
from sqlalchemy import text

from broker.db.engine import create_engine
from broker.db.migrate import head_revisions
from tests.factories import Desk, consent_token, make_desk, open_session


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when the series is absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = (
        rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$" if labels else rf"^{name} (\S+)$"
    )
    found = re.search(pattern, metrics, re.MULTILINE)
    return float(found[1]) if found else 0.0


async def test_healthz_needs_nothing(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]


async def test_readyz_when_migrated(client: httpx.AsyncClient, settings: Any) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "migration": sorted(head_revisions(settings.database_url)),
    }


async def test_readyz_refuses_a_database_behind_the_code(
    app: Any, client: httpx.AsyncClient
) -> None:
    async with app.state.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0001_core'"))
    try:
        response = await client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["error"] == "migrations_pending"
        assert "0001_core" in body["detail"]
    finally:
        heads = sorted(head_revisions(str(app.state.engine.url)))
        async with app.state.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": heads[0]})
    assert (await client.get("/readyz")).status_code == 200


async def test_readyz_refuses_an_unreachable_database(app: Any, client: httpx.AsyncClient) -> None:
    working = app.state.engine
    # Nothing listens on port 1: connecting fails at once.
    app.state.engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        response = await client.get("/readyz")
    finally:
        await app.state.engine.dispose()
        app.state.engine = working
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["error"] == "database_unreachable"
    assert (await client.get("/healthz")).status_code == 200  # alive, just not ready


async def test_readyz_answers_in_bounded_time_when_the_database_hangs(
    app: Any, client: httpx.AsyncClient, monkeypatch: Any
) -> None:
    # A route to the database that was dropped: connections are taken and never answered
    # (no error comes back). /readyz must still say "not ready", and soon.
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    working = app.state.engine
    monkeypatch.setattr(app.state.settings, "readiness_timeout_seconds", 0.3)
    app.state.engine = create_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{port}/none")
    try:
        first = await asyncio.wait_for(client.get("/readyz"), 10)
        # The probe still hangs: the next call does not start another, it answers at once.
        second = await asyncio.wait_for(client.get("/readyz"), 10)
    finally:
        for writer in held:
            writer.transport.abort()
        server.close()
        await app.state.engine.dispose()
        app.state.engine = working
    for answer in (first, second):
        assert answer.status_code == 503
        assert answer.json()["error"] == "database_unreachable"
        assert "has not answered within 0.3 s" in answer.json()["detail"]
    assert len(held) == 1  # one probe in flight, not one per call
    assert (await client.get("/readyz")).status_code == 200  # the database is back


async def test_metrics_count_requests_sessions_and_consent_decisions(
    app: Any, client: httpx.AsyncClient
) -> None:
    before = (await client.get("/metrics")).text
    desk: Desk = await make_desk(app)
    first = await open_session(client, desk, ticket={"system": "helpdesk", "external_id": "M-1"})
    second = await open_session(client, desk, ticket={"system": "helpdesk", "external_id": "M-2"})
    for created, decision in ((first, "approve"), (second, "deny")):
        decided = await client.post(
            f"/api/v1/consent/{consent_token(created)}/decision",
            json={"decision": decision, "name": "Erika"},
        )
        assert decided.status_code == 200, decided.text
    missing = await client.get("/api/v1/sessions/no-such-session", headers=desk.headers)
    assert missing.status_code == 404

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    # Sessions by state come from the database (this test's database only).
    assert sample(after, "supportbroker_sessions", state="approved") == 1
    assert sample(after, "supportbroker_sessions", state="denied") == 1
    assert sample(after, "supportbroker_sessions", state="active") == 0
    # Counters are process-wide: compare with the reading taken before.
    name = "supportbroker_consent_decisions_total"
    for decision in ("approve", "deny"):
        assert sample(after, name, decision=decision) - sample(before, name, decision=decision) == 1
    assert f'{name}{{decision="unattended"}}' in after  # exported before its first use
    requests = "supportbroker_http_requests_total"
    created = sample(after, requests, method="POST", status="201")
    assert created - sample(before, requests, method="POST", status="201") == 2
    not_found = sample(after, requests, method="GET", status="404")
    assert not_found - sample(before, requests, method="GET", status="404") >= 1
