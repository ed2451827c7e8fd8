"""Devices through the API: create, read, list with visibility and filters, update, delete."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from broker.devices.models import Device
from tests.devices.conftest import Caller
from tests.devices.test_groups import system_events
from tests.factories import make_desk, make_device, make_group, open_session

API = "/api/v1/devices"


async def device_count(app: Any) -> int:
    async with app.state.sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(Device)) or 0)


def device_body(group_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "FIN-LT-042",
        "group_id": group_id,
        "provider": "anydesk",
        "provider_device_id": "123456789",
        "asset_tag": "INV-0042",
        "owner_name": "Erika Mustermann",
        "owner_contact": "erika@example.test",
    }
    body.update(overrides)
    return body


async def test_create_get_and_audit(app: Any, client: httpx.AsyncClient, admin: Caller) -> None:
    group = await make_group(app, name="Finance")
    response = await client.post(API, json=device_body(group.id), headers=admin.headers)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["group"] == {"id": group.id, "name": "Finance"}
    assert created["provider"] == "anydesk"
    assert created["asset_tag"] == "INV-0042"

    got = await client.get(f"{API}/{created['id']}", headers=admin.headers)
    assert got.json() == created

    [(event, payload)] = await system_events(app, "device.")
    assert event == "device.created"
    assert payload["data"]["device_id"] == created["id"]
    assert payload["data"]["provider_device_id"] == "123456789"
    assert payload["data"]["group"] == "Finance"


async def test_optional_fields_may_be_left_out(
    client: httpx.AsyncClient, app: Any, admin: Caller
) -> None:
    group = await make_group(app)
    body = {"name": "kiosk", "group_id": group.id, "provider": "agent", "provider_device_id": "k1"}
    response = await client.post(API, json=body, headers=admin.headers)
    assert response.status_code == 201, response.text
    assert response.json()["owner_name"] is None


async def test_duplicate_provider_id_is_409(
    app: Any, client: httpx.AsyncClient, admin: Caller
) -> None:
    group = await make_group(app)
    assert (await client.post(API, json=device_body(group.id), headers=admin.headers)).is_success
    again = await client.post(API, json=device_body(group.id, name="other"), headers=admin.headers)
    assert again.status_code == 409
    assert (
        "anydesk device '123456789' is already registered as 'FIN-LT-042'" in again.json()["detail"]
    )
    # The same id at another provider is another device.
    other = device_body(group.id, provider="meshcentral")
    assert (await client.post(API, json=other, headers=admin.headers)).status_code == 201
    assert await device_count(app) == 2


async def test_unknown_provider_and_group_are_422(
    app: Any, client: httpx.AsyncClient, admin: Caller
) -> None:
    group = await make_group(app)
    bad = await client.post(
        API, json=device_body(group.id, provider="teamviewer"), headers=admin.headers
    )
    assert bad.status_code == 422
    detail = bad.json()["detail"]
    assert "unknown provider 'teamviewer'" in detail
    for known in ("anydesk", "meshcentral", "agent"):
        assert known in detail
    missing = await client.post(API, json=device_body("no-such-group"), headers=admin.headers)
    assert missing.status_code == 422
    assert "no device group no-such-group" in missing.json()["detail"]
    assert await device_count(app) == 0
    assert await system_events(app, "device.") == []


async def test_technician_sees_only_devices_of_their_groups(
    app: Any, client: httpx.AsyncClient, tech: Caller, auditor: Caller, admin: Caller
) -> None:
    mine = await make_group(app, [tech.user], name="Mine")
    theirs = await make_group(app, [], name="Theirs")
    a = await make_device(app, mine, name="alpha")
    b = await make_device(app, theirs, name="bravo")

    listed = (await client.get(API, headers=tech.headers)).json()
    assert [d["name"] for d in listed["items"]] == ["alpha"]
    assert listed["total"] == 1
    assert (await client.get(f"{API}/{a.id}", headers=tech.headers)).status_code == 200
    hidden = await client.get(f"{API}/{b.id}", headers=tech.headers)
    assert hidden.status_code == 403
    assert "not in any of your device groups" in hidden.json()["detail"]
    # Filtering on a group they are not in does not reveal its devices.
    other = await client.get(API, params={"group_id": theirs.id}, headers=tech.headers)
    assert other.json()["items"] == []

    for who in (auditor, admin):
        names = [d["name"] for d in (await client.get(API, headers=who.headers)).json()["items"]]
        assert names == ["alpha", "bravo"]


async def test_list_filters_and_pages(app: Any, client: httpx.AsyncClient, admin: Caller) -> None:
    one = await make_group(app, name="One")
    two = await make_group(app, name="Two")
    for n in range(4):
        await make_device(app, one, name=f"one-{n}", provider="anydesk")
    await make_device(app, two, name="two-0", provider="meshcentral", asset_tag="INV-77")

    def names(response: httpx.Response) -> list[str]:
        return [d["name"] for d in response.json()["items"]]

    by_group = await client.get(API, params={"group_id": two.id}, headers=admin.headers)
    assert names(by_group) == ["two-0"]
    by_provider = await client.get(API, params={"provider": "anydesk"}, headers=admin.headers)
    assert by_provider.json()["total"] == 4
    by_text = await client.get(API, params={"q": "inv-77"}, headers=admin.headers)
    assert names(by_text) == ["two-0"]
    page = await client.get(API, params={"limit": 2, "offset": 2}, headers=admin.headers)
    assert names(page) == ["one-2", "one-3"]
    assert page.json()["total"] == 5


async def test_update_moves_and_clears(app: Any, client: httpx.AsyncClient, admin: Caller) -> None:
    one = await make_group(app, name="One")
    two = await make_group(app, name="Two")
    device = await make_device(app, one, asset_tag="INV-1")
    response = await client.patch(
        f"{API}/{device.id}",
        json={"group_id": two.id, "asset_tag": None, "name": "renamed"},
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["group"]["name"] == "Two"
    assert body["asset_tag"] is None
    assert body["name"] == "renamed"
    [(_, payload)] = await system_events(app, "device.updated")
    assert payload["data"]["changes"]["group_id"] == {"from": one.id, "to": two.id}
    assert payload["data"]["changes"]["asset_tag"] == {"from": "INV-1", "to": None}


async def test_update_refusals(app: Any, client: httpx.AsyncClient, admin: Caller) -> None:
    group = await make_group(app)
    first = await make_device(app, group, provider="anydesk", provider_device_id="111")
    second = await make_device(app, group, provider="anydesk", provider_device_id="222")
    url = f"{API}/{second.id}"
    clash = await client.patch(url, json={"provider_device_id": "111"}, headers=admin.headers)
    assert clash.status_code == 409
    for body, status, words in (
        ({}, 422, "at least one"),
        ({"name": None}, 422, "name"),
        ({"provider": "teamviewer"}, 422, "unknown provider"),
        ({"group_id": "nope"}, 422, "no device group"),
        ({"owner_name": "a\x1bb"}, 422, "control characters"),
    ):
        response = await client.patch(url, json=body, headers=admin.headers)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["detail"]
    missing = await client.patch(f"{API}/nope", json={"name": "x"}, headers=admin.headers)
    assert missing.status_code == 404
    got = (await client.get(url, headers=admin.headers)).json()
    assert got["provider_device_id"] == "222"
    assert first.provider_device_id == "111"
    assert await system_events(app, "device.updated") == []


async def test_delete(app: Any, client: httpx.AsyncClient, admin: Caller) -> None:
    group = await make_group(app)
    device = await make_device(app, group, name="old-pc")
    response = await client.delete(f"{API}/{device.id}", headers=admin.headers)
    assert response.status_code == 204
    assert await device_count(app) == 0
    assert (await client.get(f"{API}/{device.id}", headers=admin.headers)).status_code == 404
    assert (await client.delete(f"{API}/{device.id}", headers=admin.headers)).status_code == 404
    [(_, payload)] = await system_events(app, "device.deleted")
    assert payload["data"]["name"] == "old-pc"


async def test_delete_is_refused_while_the_device_has_sessions(
    app: Any, client: httpx.AsyncClient, admin: Caller
) -> None:
    desk = await make_desk(app)
    await open_session(client, desk)
    response = await client.delete(f"{API}/{desk.device.id}", headers=admin.headers)
    assert response.status_code == 409
    assert "has 1 session(s)" in response.json()["detail"]
    assert await device_count(app) == 1
    assert await system_events(app, "device.deleted") == []


async def test_writes_need_devices_write(
    app: Any, client: httpx.AsyncClient, tech: Caller, auditor: Caller
) -> None:
    group = await make_group(app, [tech.user])
    device = await make_device(app, group)
    for who in (tech, auditor):
        create = await client.post(API, json=device_body(group.id), headers=who.headers)
        assert create.status_code == 403
        patch = await client.patch(f"{API}/{device.id}", json={"name": "x"}, headers=who.headers)
        assert patch.status_code == 403
        delete = await client.delete(f"{API}/{device.id}", headers=who.headers)
        assert delete.status_code == 403
    assert await device_count(app) == 1
    assert (await client.get(API)).status_code == 401
