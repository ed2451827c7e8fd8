"""Ticket-system tokens reach only their own system's tickets; attempts elsewhere are audited."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import audit_events
from tests.tickets.test_api import API, create, ticket_body, ticket_count


async def denied_events(app: Any) -> list[dict[str, Any]]:
    return [p["data"] for e, p in await audit_events(app, "_system") if e == "ticket.access_denied"]


async def test_system_token_creates_and_reads_its_own_tickets(
    app: Any, client: httpx.AsyncClient, zammad: dict[str, str]
) -> None:
    created = await create(client, zammad, system="zammad", external_id="1042")
    assert created["ref"] == "zammad:1042"
    got = await client.get(f"{API}/zammad/1042", headers=zammad)
    assert got.status_code == 200
    patched = await client.patch(f"{API}/zammad/1042", json={"state": "closed"}, headers=zammad)
    assert patched.status_code == 200, patched.text
    events = await audit_events(app, "zammad:1042")
    assert [e for e, _ in events] == ["ticket.created", "ticket.closed"]
    assert events[0][1]["actor"]["kind"] == "ticket_system"


async def test_system_token_cannot_create_for_another_system(
    app: Any, client: httpx.AsyncClient, zammad: dict[str, str]
) -> None:
    response = await client.post(API, json=ticket_body(system="glpi"), headers=zammad)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert "'zammad'" in response.json()["detail"]
    assert "'glpi'" in response.json()["detail"]
    assert await ticket_count(app) == 0
    assert await denied_events(app) == [{"own_system": "zammad", "asked_system": "glpi"}]


async def test_system_token_cannot_read_or_change_another_systems_ticket(
    app: Any, client: httpx.AsyncClient, tech: dict[str, str], zammad: dict[str, str]
) -> None:
    await create(client, tech)  # helpdesk:HD-4711
    read = await client.get(f"{API}/helpdesk/HD-4711", headers=zammad)
    assert read.status_code == 403
    # Same answer for a ticket that does not exist: no existence oracle across systems.
    assert (await client.get(f"{API}/helpdesk/HD-0", headers=zammad)).status_code == 403
    write = await client.patch(f"{API}/helpdesk/HD-4711", json={"state": "closed"}, headers=zammad)
    assert write.status_code == 403
    got = await client.get(f"{API}/helpdesk/HD-4711", headers=tech)
    assert got.json()["state"] == "open"
    assert len(await denied_events(app)) == 3


async def test_system_token_lists_only_its_own_system(
    client: httpx.AsyncClient, tech: dict[str, str], zammad: dict[str, str]
) -> None:
    await create(client, tech)
    await create(client, tech, system="zammad", external_id="1")
    await create(client, tech, system="zammad", external_id="2")
    mine = (await client.get(API, headers=zammad)).json()
    assert sorted(t["ref"] for t in mine["items"]) == ["zammad:1", "zammad:2"]
    assert mine["total"] == 2
    explicit = await client.get(API, params={"system": "zammad"}, headers=zammad)
    assert explicit.json()["total"] == 2
    other = await client.get(API, params={"system": "helpdesk"}, headers=zammad)
    assert other.status_code == 403
    # A user's token sees every system.
    assert (await client.get(API, headers=tech)).json()["total"] == 3


async def test_system_token_has_no_device_access(
    client: httpx.AsyncClient, zammad: dict[str, str]
) -> None:
    response = await client.get("/api/v1/devices", headers=zammad)
    assert response.status_code == 403
    assert "devices:read" in response.json()["detail"]
