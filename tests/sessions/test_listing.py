"""Listing and filtering sessions; who sees what; the ``session list`` command."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest

from broker.db.base import utcnow
from tests.factories import (
    Desk,
    bearer,
    consent_token,
    make_desk,
    make_token,
    make_user,
    open_session,
)


async def ids(client: httpx.AsyncClient, headers: dict[str, str], query: str = "") -> set[str]:
    response = await client.get(f"/api/v1/sessions{query}", headers=headers)
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


async def test_filters_and_visibility(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    other = await make_desk(app)
    a = await open_session(client, desk, ticket={"system": "helpdesk", "external_id": "A-1"})
    b = await open_session(client, desk, ticket={"system": "zammad", "external_id": "B-2"})
    c = await open_session(client, other, ticket={"system": "helpdesk", "external_id": "A-1"})
    await client.post(
        f"/api/v1/consent/{consent_token(b)}/decision", json={"decision": "deny", "name": "E"}
    )
    auditor, _ = await make_user(app, "auditor")
    audit = bearer(await make_token(app, auditor))

    assert await ids(client, desk.headers) == {a["id"], b["id"]}  # only their own
    assert await ids(client, audit) == {a["id"], b["id"], c["id"]}
    assert await ids(client, audit, "?system=helpdesk&external_id=A-1") == {a["id"], c["id"]}
    assert await ids(client, audit, f"?technician_id={other.tech.id}") == {c["id"]}
    assert await ids(client, audit, f"?device_id={desk.device.id}") == {a["id"], b["id"]}
    assert await ids(client, audit, "?state=denied") == {b["id"]}
    future = (utcnow() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert await ids(client, audit, f"?since={future}") == set()
    assert await ids(client, audit, f"?until={future}") == {a["id"], b["id"], c["id"]}
    # A technician's technician_id filter cannot widen their view.
    assert await ids(client, desk.headers, f"?technician_id={other.tech.id}") == {a["id"], b["id"]}
    page = await client.get("/api/v1/sessions?limit=1&offset=1", headers=audit)
    assert len(page.json()["items"]) == 1


async def test_filter_by_audit_event_type_and_dates(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    a = await open_session(client, desk, ticket={"system": "helpdesk", "external_id": "A-1"})
    b = await open_session(client, desk, ticket={"system": "zammad", "external_id": "B-2"})
    await client.post(
        f"/api/v1/consent/{consent_token(b)}/decision", json={"decision": "deny", "name": "E"}
    )
    auditor, _ = await make_user(app, "auditor")
    audit = bearer(await make_token(app, auditor))
    assert await ids(client, audit, "?event_type=session.denied") == {b["id"]}
    assert await ids(client, audit, "?event_type=session.requested") == {a["id"], b["id"]}
    assert await ids(client, audit, "?event_type=recording.viewed") == set()
    # the range bounds the event too: it happened now, not before an hour ago
    past = (utcnow() - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert await ids(client, audit, f"?event_type=session.denied&until={past}") == set()
    assert await ids(client, audit, f"?event_type=session.denied&since={past}") == {b["id"]}
    paged = await client.get(
        "/api/v1/sessions?event_type=session.requested&limit=1&offset=1", headers=audit
    )
    assert len(paged.json()["items"]) == 1
    unknown = await client.get("/api/v1/sessions?event_type=session.nope", headers=audit)
    assert unknown.status_code == 422
    # the log's headers are audit content: a technician may not search by them
    refused = await client.get("/api/v1/sessions?event_type=session.denied", headers=desk.headers)
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"


async def test_integration_token_cannot_read_sessions(app: Any, client: httpx.AsyncClient) -> None:
    token = await make_token(app, None, system="helpdesk")
    assert (await client.get("/api/v1/sessions", headers=bearer(token))).status_code == 403
    assert (await client.get("/api/v1/sessions")).status_code == 401


@pytest.fixture
def cli_env(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBROKER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SUPPORTBROKER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("SUPPORTBROKER_SECRET_KEY", settings.secret_key.get_secret_value())
    monkeypatch.setenv("SUPPORTBROKER_ENVIRONMENT", "test")


async def test_cli_session_list(
    app: Any, client: httpx.AsyncClient, desk: Desk, cli_env: None, capsys: Any
) -> None:
    import asyncio

    from broker.cli import main

    created = await open_session(client, desk)
    code = await asyncio.to_thread(
        main, ["session", "list", "--json", "--ticket", "helpdesk:HD-4711"]
    )
    assert code == 0
    listed = json.loads(capsys.readouterr().out)
    assert [item["id"] for item in listed] == [created["id"]]
    code = await asyncio.to_thread(main, ["session", "list", "--state", "ended"])
    assert code == 0
    assert "no sessions" in capsys.readouterr().out
    code = await asyncio.to_thread(main, ["session", "list"])
    assert code == 0
    assert created["id"] in capsys.readouterr().out
    code = await asyncio.to_thread(main, ["session", "list", "--ticket", "nocolon"])
    assert code == 1
    assert "SYSTEM:ID" in capsys.readouterr().err
