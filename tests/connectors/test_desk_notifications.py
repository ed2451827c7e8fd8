"""Each desk's own notification, over HTTP, against a running session (SQLite and PostgreSQL).

The notifications are the desks' published examples (tests/connectors/fixtures), signed as
each desk signs them (tests/connectors/test_native_webhooks.py); the tickets and the comment
API are the desks' fakes (tests/connectors/fakes). Closed or merged ends the session with the
reason sealed; reassigned away (another person, or a group not mapped to the technician's)
ends it; reassigned to the technician leaves it; a forged, replayed or unreadable delivery
gets a 4xx, is kept for the admin and changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.app import create_app
from broker.cli import main
from broker.config import Settings
from broker.connectors import registry as registry_mod
from tests.connectors.conftest import mount
from tests.connectors.fakes.zammad import FakeZammad
from tests.connectors.harness import HOOK_SECRET, Harness, harness
from tests.connectors.test_native_webhooks import CLOSING, DESKS
from tests.connectors.test_session_flow import act, decide, on
from tests.factories import Desk, audit_events, bearer, make_desk, make_token, make_user


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def desk(app: Any) -> Desk:
    return await make_desk(app, name="Service Desk Staff")


@pytest.fixture
async def hd(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """The desk of ``request.param`` (its fake API) as the only configured system."""
    h = harness(request.param)
    h.entry = {**h.entry, "group_map": {"Service Desk": "Service Desk Staff"}}
    registry = h.registry()
    registry_mod.install(registry)
    yield h
    registry_mod.install(None)
    await registry.aclose()


async def running(client: httpx.AsyncClient, desk: Desk, h: Harness) -> str:
    response = await client.post(
        "/api/v1/sessions",
        json={
            **on(h.open_id, h.kind),
            "device_id": desk.device.id,
            "reason": "Printer driver keeps crashing after the update",
            "capabilities": ["view", "control"],
            "duration_minutes": 30,
        },
        headers=desk.headers,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    await decide(client, created, "approve")
    await act(client, desk, created["id"], "start")
    return str(created["id"])


async def notify(
    client: httpx.AsyncClient, kind: str, *, secret: str = HOOK_SECRET, **values: Any
) -> tuple[httpx.Response, tuple[dict[str, str], bytes]]:
    headers, body = DESKS[kind].request(secret=secret, at=now(), **values)
    response = await client.post(
        f"/api/v1/connectors/{kind}/webhook", content=body, headers=headers
    )
    return response, (headers, body)


async def state_of(client: httpx.AsyncClient, desk: Desk, sid: str) -> dict[str, Any]:
    got = await client.get(f"/api/v1/sessions/{sid}", headers=desk.headers)
    assert got.status_code == 200, got.text
    data: dict[str, Any] = got.json()
    return data


async def admin_headers(app: Any) -> dict[str, str]:
    admin, _ = await make_user(app, "admin")
    return bearer(await make_token(app, admin))


@pytest.mark.parametrize("hd", ["zammad", "jira", "glpi", "freshdesk"], indirect=True)
async def test_the_desks_own_closing_notification_ends_a_running_session(
    app: Any, client: httpx.AsyncClient, desk: Desk, hd: Harness
) -> None:
    sid = await running(client, desk, hd)
    values, _ = CLOSING[hd.kind]
    ids = {"zammad": {"ticket__id": 11}, "jira": {"issue__key": "HD-51"}}.get(hd.kind, {})
    response, (headers, body) = await notify(client, hd.kind, **values, **ids)
    assert response.status_code == 200, response.text
    session = await state_of(client, desk, sid)
    assert session["state"] == "ended"
    assert session["end_reason"].startswith("ticket closed")
    events = await audit_events(app, f"{hd.kind}:{hd.open_id}")
    closed = next(p for t, p in events if t == "ticket.closed")
    assert closed["actor"] == {"kind": "ticket_system", "name": hd.kind}
    assert closed["data"]["source"] == "webhook"
    ended = next(p for t, p in events if t == "session.ended")
    assert ended["data"]["end_reason"] == session["end_reason"]

    again = await client.post(
        f"/api/v1/connectors/{hd.kind}/webhook", content=body, headers=headers
    )
    if hd.kind == "freshdesk":
        # Freshdesk sends no id and no timestamp: a replay cannot be told from a second
        # notification; applying "closed" to a closed ticket changes nothing.
        assert again.status_code == 200, again.text
        assert [t for t, _ in await audit_events(app, f"{hd.kind}:{hd.open_id}")] == [
            t for t, _ in events
        ]
        return
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "conflict"
    kept = await client.get("/api/v1/connectors/rejected", headers=await admin_headers(app))
    (row,) = kept.json()["rejected"]
    assert (row["system"], row["status"]) == (hd.kind, 409)


@pytest.mark.parametrize("hd", ["zammad", "glpi"], indirect=True)
async def test_a_forged_or_unreadable_notification_is_refused_kept_and_changes_nothing(
    app: Any, client: httpx.AsyncClient, desk: Desk, hd: Harness
) -> None:
    sid = await running(client, desk, hd)
    values, _ = CLOSING[hd.kind]
    forged, _ = await notify(client, hd.kind, secret="someone-elses-secret-0000", **values)
    assert forged.status_code == 401, forged.text
    assert set(forged.json()) == {"error", "detail"}
    signer = DESKS[hd.kind].sign
    garbage = b'{"neither": "ticket nor item"}'
    unreadable = await client.post(
        f"/api/v1/connectors/{hd.kind}/webhook",
        content=garbage,
        headers={"Content-Type": "application/json", **signer(garbage, HOOK_SECRET, now())},
    )
    assert unreadable.status_code == 422, unreadable.text
    assert unreadable.json()["error"] == "invalid_request"
    assert (await state_of(client, desk, sid))["state"] == "active"
    types = [t for t, _ in await audit_events(app, f"{hd.kind}:{hd.open_id}")]
    assert "ticket.closed" not in types

    kept = await client.get(
        f"/api/v1/connectors/rejected?system={hd.kind}", headers=await admin_headers(app)
    )
    assert kept.status_code == 200, kept.text
    newest, oldest = kept.json()["rejected"]
    assert (oldest["status"], newest["status"]) == (401, 422)
    assert newest["body"] == garbage.decode()
    signature = "x-hub-signature" if hd.kind == "zammad" else "x-glpi-signature"
    assert oldest["headers"][signature] == "[redacted]"
    assert HOOK_SECRET not in str(kept.json())


@pytest.mark.parametrize("hd", ["zammad"], indirect=True)
async def test_who_has_the_ticket_decides_whether_the_session_goes_on(
    app: Any, client: httpx.AsyncClient, desk: Desk, hd: Harness
) -> None:
    sid = await running(client, desk, hd)
    me = {"login": desk.tech.username, "id": 9}
    ticket = {"ticket__id": 11}
    # To the technician in person: theirs.
    response, _ = await notify(client, "zammad", ticket__owner=me, ticket__owner_id=9, **ticket)
    assert response.status_code == 200, response.text
    # To nobody in person, in a group mapped to the technician's device group: still theirs.
    nobody = {"ticket__owner": {"login": "-", "id": 1}, "ticket__owner_id": 1}
    response, _ = await notify(client, "zammad", **nobody, **ticket)
    assert response.status_code == 200, response.text
    assert (await state_of(client, desk, sid))["state"] == "active"
    # Moved out of the mapped group: not theirs any more.
    moved = {"ticket__group": {"id": 9, "name": "Second Level"}}
    response, _ = await notify(client, "zammad", **nobody, **moved, **ticket)
    assert response.status_code == 200, response.text
    session = await state_of(client, desk, sid)
    assert (session["state"], session["end_reason"]) == (
        "ended",
        "ticket moved to group Second Level",
    )
    events = await audit_events(app, "zammad:11")
    handovers = [p["data"]["after"] for t, p in events if t == "ticket.reassigned"]
    assert [(a["assignee"], a["group"]) for a in handovers] == [
        (desk.tech.username, "Service Desk"),
        (None, "Service Desk"),
        (None, "Second Level"),
    ]

    # A second session, then the ticket goes to a colleague in person.
    other = await running(client, desk, hd)
    colleague = {"login": "emma@chrispresso.com", "id": 5}
    back = {"ticket__group": {"id": 3, "name": "Service Desk"}}
    response, _ = await notify(
        client, "zammad", ticket__owner=colleague, ticket__owner_id=5, **back, **ticket
    )
    assert response.status_code == 200, response.text
    session = await state_of(client, desk, other)
    assert session["state"] == "ended"
    assert session["end_reason"] == "ticket reassigned to emma@chrispresso.com"


@pytest.mark.parametrize("hd", ["zammad"], indirect=True)
async def test_merged_ends_and_reopened_takes_sessions_again(
    app: Any, client: httpx.AsyncClient, desk: Desk, hd: Harness
) -> None:
    sid = await running(client, desk, hd)
    response, _ = await notify(client, "zammad", ticket__id=11, ticket__state="merged")
    assert response.status_code == 200, response.text
    session = await state_of(client, desk, sid)
    assert (session["state"], session["end_reason"]) == ("ended", "ticket merged")
    fake = hd.fake
    assert isinstance(fake, FakeZammad)
    fake.tickets[11]["state"] = "merged"
    refused = await client.post(
        "/api/v1/sessions",
        json={**on("11", "zammad"), "device_id": desk.device.id,
              "reason": "Printer driver keeps crashing after the update",
              "capabilities": ["view"], "duration_minutes": 30},
        headers=desk.headers,
    )  # fmt: skip
    assert refused.status_code == 403, refused.text

    fake.tickets[11]["state"] = "open"
    response, _ = await notify(client, "zammad", ticket__id=11, ticket__state="open")
    assert response.status_code == 200, response.text
    types = [t for t, _ in await audit_events(app, "zammad:11")]
    assert types.count("ticket.merged") == 1
    assert types[-1] == "ticket.reopened"
    assert await running(client, desk, hd)


def test_the_admin_lists_refusals_from_the_command_line(
    tmp_path: Path,
    sqlite_template: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = tmp_path / "cli.db"
    shutil.copy(sqlite_template, target)
    env = {
        "SUPPORTBROKER_DATABASE_URL": f"sqlite+aiosqlite:///{target}",
        "SUPPORTBROKER_DATA_DIR": str(tmp_path / "data"),
        "SUPPORTBROKER_ENVIRONMENT": "test",
        "SUPPORTBROKER_SECRET_KEY": "cli-test-secret-" + "p" * 16,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    h = harness("zammad")

    async def refuse() -> None:
        app = mount(create_app(Settings(gateway_enabled=False, sweep_interval_seconds=3600)))
        registry = h.registry()
        registry_mod.install(registry)
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
                    answer, _ = await notify(client, "zammad", secret="forged-secret-" * 2)
                    assert answer.status_code == 401, answer.text
        finally:
            registry_mod.install(None)
            await registry.aclose()

    asyncio.run(refuse())
    assert main(["connector", "rejected", "--system", "zammad", "--limit", "5"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    row = json.loads(line)
    assert (row["system"], row["status"], row["error"]) == ("zammad", 401, "not_authenticated")
    assert row["headers"]["x-hub-signature"] == "[redacted]"
    assert '"ticket"' in row["body"]
    assert main(["connector", "rejected", "--system", "jira"]) == 0
    assert "no refused deliveries kept for jira" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        main(["connector", "rejected", "--limit", "0"])
    assert usage.value.code == 2
