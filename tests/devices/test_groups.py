"""Device groups through the API: create, read, policies, membership, visibility, audit."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from broker.devices.models import DeviceGroup, GroupMember
from broker.devices.repository import GroupRepository
from tests.devices.conftest import Caller, caller
from tests.factories import audit_events, make_group

API = "/api/v1/device-groups"


async def system_events(app: Any, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e, p) for e, p in await audit_events(app, "_system") if e.startswith(prefix)]


async def group_count(app: Any) -> int:
    async with app.state.sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(DeviceGroup)) or 0)


async def member_count(app: Any) -> int:
    async with app.state.sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(GroupMember)) or 0)


async def new_group(client: httpx.AsyncClient, admin: Caller, **body: Any) -> dict[str, Any]:
    response = await client.post(API, json={"name": "Accounting", **body}, headers=admin.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_create_with_policies(app: Any, client: httpx.AsyncClient, admin: Caller) -> None:
    created = await new_group(
        client,
        admin,
        description="Finance laptops",
        unattended_allowed=True,
        consent_timeout_seconds=300,
        record_input=True,
        allowed_ports=[5900, 22],
        allowed_paths=["C:\\Users\\Public"],
        questions=[{"id": "saved", "label": "Have you saved your work?"}],
    )
    assert created["unattended_allowed"] is True
    assert created["consent_timeout_seconds"] == 300
    assert created["allowed_ports"] == [22, 5900]
    assert created["questions"] == [{"id": "saved", "label": "Have you saved your work?"}]
    assert created["members"] == []

    got = await client.get(f"{API}/{created['id']}", headers=admin.headers)
    assert got.json() == created

    (event, payload), *_ = await system_events(app, "device_group.")
    assert event == "device_group.created"
    assert payload["data"]["name"] == "Accounting"
    assert payload["data"]["unattended_allowed"] is True
    assert payload["actor"]["name"] == admin.user.display_name
    assert payload["actor"]["role"] == "admin"


async def test_defaults(client: httpx.AsyncClient, admin: Caller) -> None:
    created = await new_group(client, admin)
    assert created["unattended_allowed"] is False
    assert created["consent_timeout_seconds"] is None
    assert created["record_input"] is False
    assert created["allowed_ports"] == created["allowed_paths"] == created["questions"] == []


async def test_duplicate_name_is_409(app: Any, client: httpx.AsyncClient, admin: Caller) -> None:
    await new_group(client, admin)
    again = await client.post(API, json={"name": "Accounting"}, headers=admin.headers)
    assert again.status_code == 409
    assert "'Accounting' already exists" in again.json()["detail"]
    assert await group_count(app) == 1


async def test_update_policies_and_audit(
    app: Any, client: httpx.AsyncClient, admin: Caller
) -> None:
    created = await new_group(client, admin, consent_timeout_seconds=300)
    url = f"{API}/{created['id']}"
    response = await client.patch(
        url,
        json={
            "unattended_allowed": True,
            "consent_timeout_seconds": None,
            "questions": [{"id": "q1", "label": "May we restart?"}],
        },
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["unattended_allowed"] is True
    assert body["consent_timeout_seconds"] is None
    assert body["questions"] == [{"id": "q1", "label": "May we restart?"}]
    assert body["name"] == "Accounting"  # not sent, not changed

    updated = [p for e, p in await system_events(app, "device_group.updated")]
    assert len(updated) == 1
    assert updated[0]["data"]["changes"]["unattended_allowed"] == {"from": False, "to": True}
    assert updated[0]["data"]["changes"]["consent_timeout_seconds"] == {"from": 300, "to": None}


async def test_rename_onto_an_existing_name_is_409(
    client: httpx.AsyncClient, admin: Caller
) -> None:
    await new_group(client, admin)
    other = await new_group(client, admin, name="Sales")
    response = await client.patch(
        f"{API}/{other['id']}", json={"name": "Accounting"}, headers=admin.headers
    )
    assert response.status_code == 409
    same = await client.patch(f"{API}/{other['id']}", json={"name": "Sales"}, headers=admin.headers)
    assert same.status_code == 200


async def test_update_refuses_null_and_empty(client: httpx.AsyncClient, admin: Caller) -> None:
    created = await new_group(client, admin)
    url = f"{API}/{created['id']}"
    for body, words in (
        ({}, "at least one"),
        ({"name": None}, "name"),
        ({"unattended_allowed": None}, "unattended_allowed"),
        ({"questions": None}, "questions"),
    ):
        response = await client.patch(url, json=body, headers=admin.headers)
        assert response.status_code == 422, body
        assert words in response.json()["detail"]
    missing = await client.patch(f"{API}/nope", json={"name": "X"}, headers=admin.headers)
    assert missing.status_code == 404


async def test_members(app: Any, client: httpx.AsyncClient, admin: Caller, tech: Caller) -> None:
    created = await new_group(client, admin)
    url = f"{API}/{created['id']}/members/{tech.user.id}"
    added = await client.put(url, headers=admin.headers)
    assert added.status_code == 200, added.text
    assert [m["id"] for m in added.json()["members"]] == [tech.user.id]
    # Idempotent: a second PUT changes nothing and writes no second event.
    assert (await client.put(url, headers=admin.headers)).status_code == 200
    assert await member_count(app) == 1

    removed = await client.delete(url, headers=admin.headers)
    assert removed.status_code == 204
    assert await member_count(app) == 0
    again = await client.delete(url, headers=admin.headers)
    assert again.status_code == 404

    types = [e for e, _ in await system_events(app, "device_group.member")]
    assert types == ["device_group.member_added", "device_group.member_removed"]


async def test_only_technicians_can_be_members(
    app: Any, client: httpx.AsyncClient, admin: Caller, auditor: Caller
) -> None:
    created = await new_group(client, admin)
    for user in (admin.user, auditor.user):
        response = await client.put(
            f"{API}/{created['id']}/members/{user.id}", headers=admin.headers
        )
        assert response.status_code == 422
        assert "only technicians" in response.json()["detail"]
    unknown = await client.put(f"{API}/{created['id']}/members/nobody", headers=admin.headers)
    assert unknown.status_code == 404
    no_group = await client.put(f"{API}/nope/members/{admin.user.id}", headers=admin.headers)
    assert no_group.status_code == 404
    assert await member_count(app) == 0


async def test_technician_sees_only_own_groups(
    app: Any, client: httpx.AsyncClient, tech: Caller, auditor: Caller
) -> None:
    mine = await make_group(app, [tech.user], name="Mine")
    theirs = await make_group(app, [], name="Theirs")
    listed = await client.get(API, headers=tech.headers)
    assert [g["name"] for g in listed.json()["items"]] == ["Mine"]
    assert (await client.get(f"{API}/{mine.id}", headers=tech.headers)).status_code == 200
    refused = await client.get(f"{API}/{theirs.id}", headers=tech.headers)
    assert refused.status_code == 403
    assert "not a member" in refused.json()["detail"]
    # The auditor sees every group, and changes none.
    names = [g["name"] for g in (await client.get(API, headers=auditor.headers)).json()["items"]]
    assert names == ["Mine", "Theirs"]


async def test_writes_need_devices_write(
    app: Any, client: httpx.AsyncClient, tech: Caller, auditor: Caller
) -> None:
    group = await make_group(app, [tech.user])
    other = await caller(app, "technician")
    for who in (tech, auditor):
        assert (await client.post(API, json={"name": "X"}, headers=who.headers)).status_code == 403
        patch = await client.patch(f"{API}/{group.id}", json={"name": "Y"}, headers=who.headers)
        assert patch.status_code == 403
        put = await client.put(f"{API}/{group.id}/members/{other.user.id}", headers=who.headers)
        assert put.status_code == 403
    assert await group_count(app) == 1
    assert await member_count(app) == 1


async def test_a_members_groups_follow_membership_changes_in_one_transaction(
    app: Any, client: httpx.AsyncClient, admin: Caller, tech: Caller
) -> None:
    """A member's groups are read once per transaction; a membership changed in it, or
    before the session's next transaction, is seen."""
    created = await new_group(client, admin)
    async with app.state.sessionmaker() as db:
        repo = GroupRepository(db)
        assert await repo.visible_to(tech.user.id) == []
        await repo.add_member(created["id"], tech.user.id)
        assert [g.id for g in await repo.visible_to(tech.user.id)] == [created["id"]]
        await repo.remove_member(created["id"], tech.user.id)
        assert await repo.visible_to(tech.user.id) == []
        await repo.add_member(created["id"], tech.user.id)
        await db.commit()
    async with app.state.sessionmaker() as db:
        repo = GroupRepository(db)
        assert [g.id for g in await repo.visible_to(tech.user.id)] == [created["id"]]
        await db.commit()  # the next transaction of this session reads again
        async with app.state.sessionmaker() as other:
            await GroupRepository(other).remove_member(created["id"], tech.user.id)
            await other.commit()
        assert await repo.visible_to(tech.user.id) == []
