"""The tickets API: create, get by reference, list with filters and pages, update, close."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from broker.tickets.models import Ticket
from tests.factories import audit_events, make_desk, open_session

API = "/api/v1/tickets"


def ticket_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "system": "helpdesk",
        "external_id": "HD-4711",
        "subject": "Printer offline",
        "requester": "Erika Mustermann",
    }
    body.update(overrides)
    return body


async def ticket_count(app: Any) -> int:
    async with app.state.sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(Ticket)) or 0)


async def create(
    client: httpx.AsyncClient, headers: dict[str, str], **overrides: Any
) -> dict[str, Any]:
    response = await client.post(API, json=ticket_body(**overrides), headers=headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_create_and_get(app: Any, client: httpx.AsyncClient, tech: dict[str, str]) -> None:
    created = await create(client, tech, url="https://desk.example.test/t/4711")
    assert created["ref"] == "helpdesk:HD-4711"
    assert created["state"] == "open"
    assert created["is_open"] is True
    assert created["url"] == "https://desk.example.test/t/4711"
    assert created["assignee"] is None

    got = await client.get(f"{API}/helpdesk/HD-4711", headers=tech)
    assert got.status_code == 200, got.text
    assert got.json() == created

    events = await audit_events(app, "helpdesk:HD-4711")
    assert [e for e, _ in events] == ["ticket.created"]
    payload = events[0][1]
    assert payload["data"]["subject"] == "Printer offline"
    assert payload["data"]["source"] == "api"
    assert payload["actor"]["kind"] == "token"


async def test_external_id_with_slash_is_reachable(
    client: httpx.AsyncClient, tech: dict[str, str]
) -> None:
    await create(client, tech, system="jira", external_id="SD/2024/17")
    got = await client.get(f"{API}/jira/SD/2024/17", headers=tech)
    assert got.status_code == 200, got.text
    assert got.json()["external_id"] == "SD/2024/17"


async def test_state_is_lowercased_and_closed_states_are_not_open(
    client: httpx.AsyncClient, tech: dict[str, str]
) -> None:
    created = await create(client, tech, state="Resolved")
    assert created["state"] == "resolved"
    assert created["is_open"] is False


async def test_duplicate_is_409_and_nothing_changes(
    app: Any, client: httpx.AsyncClient, tech: dict[str, str]
) -> None:
    await create(client, tech)
    again = await client.post(API, json=ticket_body(subject="Other subject"), headers=tech)
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "conflict"
    assert "helpdesk:HD-4711 already exists" in again.json()["detail"]
    assert await ticket_count(app) == 1
    got = await client.get(f"{API}/helpdesk/HD-4711", headers=tech)
    assert got.json()["subject"] == "Printer offline"
    # The same external id in another system is another ticket.
    await create(client, tech, system="zammad")
    assert await ticket_count(app) == 2


async def test_get_unknown_is_404(client: httpx.AsyncClient, tech: dict[str, str]) -> None:
    response = await client.get(f"{API}/helpdesk/HD-0", headers=tech)
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "no ticket helpdesk:HD-0"}


async def test_list_filters_and_pages(client: httpx.AsyncClient, tech: dict[str, str]) -> None:
    for n in range(5):
        await create(client, tech, external_id=f"HD-{n}", subject=f"Laptop {n} 50% slow")
    await create(client, tech, external_id="HD-9", subject="VPN down", state="closed")
    await create(client, tech, system="glpi", external_id="7", subject="VPN flaky")

    everything = (await client.get(API, headers=tech)).json()
    assert everything["total"] == 7
    assert len(everything["items"]) == 7

    helpdesk = (await client.get(API, params={"system": "helpdesk"}, headers=tech)).json()
    assert helpdesk["total"] == 6
    assert {t["system"] for t in helpdesk["items"]} == {"helpdesk"}

    closed = (await client.get(API, params={"state": "CLOSED"}, headers=tech)).json()
    assert [t["ref"] for t in closed["items"]] == ["helpdesk:HD-9"]

    vpn = (await client.get(API, params={"q": "vpn"}, headers=tech)).json()
    assert sorted(t["ref"] for t in vpn["items"]) == ["glpi:7", "helpdesk:HD-9"]

    # LIKE wildcards in q are taken literally.
    percent = (await client.get(API, params={"q": "50%"}, headers=tech)).json()
    assert percent["total"] == 5
    underscore = (await client.get(API, params={"q": "_"}, headers=tech)).json()
    assert underscore["total"] == 0

    seen: list[str] = []
    for offset in (0, 2, 4):
        page = await client.get(API, params={"limit": 2, "offset": offset}, headers=tech)
        body = page.json()
        assert body["limit"] == 2
        assert body["offset"] == offset
        assert body["total"] == 7
        seen += [t["ref"] for t in body["items"]]
    assert len(seen) == 6 == len(set(seen))


async def test_list_rejects_bad_paging(client: httpx.AsyncClient, tech: dict[str, str]) -> None:
    for params in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "x"}):
        response = await client.get(API, params=params, headers=tech)
        assert response.status_code == 422, params
        assert set(response.json()) == {"error", "detail"}


async def test_update_subject_and_assignee(
    app: Any, client: httpx.AsyncClient, tech: dict[str, str]
) -> None:
    await create(client, tech)
    response = await client.patch(
        f"{API}/helpdesk/HD-4711",
        json={"subject": "Printer on floor 3 offline", "assignee": "Max"},
        headers=tech,
    )
    assert response.status_code == 200, response.text
    assert response.json()["subject"] == "Printer on floor 3 offline"
    assert response.json()["assignee"] == "Max"

    cleared = await client.patch(f"{API}/helpdesk/HD-4711", json={"assignee": None}, headers=tech)
    assert cleared.json()["assignee"] is None

    # Sending what is already there changes nothing and writes no event.
    same = await client.patch(f"{API}/helpdesk/HD-4711", json={"assignee": None}, headers=tech)
    assert same.status_code == 200

    events = await audit_events(app, "helpdesk:HD-4711")
    assert [e for e, _ in events] == ["ticket.created", "ticket.updated", "ticket.updated"]
    assert events[1][1]["data"]["changes"] == {
        "subject": {"from": "Printer offline", "to": "Printer on floor 3 offline"},
        "assignee": {"from": None, "to": "Max"},
    }


async def test_close_and_reopen_are_audited(
    app: Any, client: httpx.AsyncClient, tech: dict[str, str]
) -> None:
    await create(client, tech)
    closed = await client.patch(f"{API}/helpdesk/HD-4711", json={"state": "closed"}, headers=tech)
    assert closed.status_code == 200, closed.text
    assert closed.json()["is_open"] is False
    reopened = await client.patch(f"{API}/helpdesk/HD-4711", json={"state": "open"}, headers=tech)
    assert reopened.json()["is_open"] is True
    pending = await client.patch(f"{API}/helpdesk/HD-4711", json={"state": "pending"}, headers=tech)
    assert pending.json()["state"] == "pending"

    events = await audit_events(app, "helpdesk:HD-4711")
    types = [e for e, _ in events]
    assert types == ["ticket.created", "ticket.closed", "ticket.reopened", "ticket.updated"]
    assert events[1][1]["data"]["changes"] == {"state": {"from": "open", "to": "closed"}}


async def test_closing_a_ticket_ends_its_open_sessions(app: Any, client: httpx.AsyncClient) -> None:
    desk = await make_desk(app)
    created = await open_session(client, desk)  # on helpdesk:HD-4711, awaiting consent
    response = await client.patch(
        f"{API}/helpdesk/HD-4711", json={"state": "closed"}, headers=desk.headers
    )
    assert response.status_code == 200, response.text
    session = await client.get(f"/api/v1/sessions/{created['id']}", headers=desk.headers)
    assert session.json()["state"] == "revoked"
    assert session.json()["end_reason"] == "ticket closed"
    types = [e for e, _ in await audit_events(app, "helpdesk:HD-4711")]
    after_close = types[types.index("ticket.closed") + 1 :]
    assert any(t.startswith("session.") and "revoked" in t for t in after_close), types


async def test_update_refuses_empty_null_and_unknown(
    app: Any, client: httpx.AsyncClient, tech: dict[str, str]
) -> None:
    await create(client, tech)
    url = f"{API}/helpdesk/HD-4711"
    for body, words in (
        ({}, "at least one"),
        ({"subject": None}, "subject"),
        ({"state": None}, "state"),
        ({"requester": "Someone else"}, "requester"),
        ({"subject": "x" * 501}, "subject"),
        ({"assignee": "Max\u202e"}, "control characters"),
    ):
        response = await client.patch(url, json=body, headers=tech)
        assert response.status_code == 422, (body, response.text)
        assert words in response.json()["detail"], (body, response.json())
    missing = await client.patch(f"{API}/helpdesk/HD-1", json={"state": "closed"}, headers=tech)
    assert missing.status_code == 404
    assert [e for e, _ in await audit_events(app, "helpdesk:HD-4711")] == ["ticket.created"]


async def test_auditor_reads_but_cannot_write(
    client: httpx.AsyncClient, tech: dict[str, str], auditor: dict[str, str]
) -> None:
    await create(client, tech)
    assert (await client.get(f"{API}/helpdesk/HD-4711", headers=auditor)).status_code == 200
    assert (await client.get(API, headers=auditor)).status_code == 200
    refused = await client.post(API, json=ticket_body(external_id="2"), headers=auditor)
    assert refused.status_code == 403
    assert "tickets:write" in refused.json()["detail"]
    patch = await client.patch(f"{API}/helpdesk/HD-4711", json={"state": "x"}, headers=auditor)
    assert patch.status_code == 403
