"""The supervisor through the API (docs/OVERSIGHT.md): the live queue of their device groups
only, reading, ending and revoking there with a reason (sealed with the
supervisor as actor), and nothing outside their groups or beyond their role. Watching
through the real gateway is in tests/gateway/test_join_watch.py."""

from __future__ import annotations

from typing import Any

import httpx

from broker.auth.models import User
from tests.factories import (
    Desk,
    audit_events,
    bearer,
    consent_token,
    make_device,
    make_group,
    make_token,
    make_user,
    open_session,
)


class World:
    def __init__(self, desk: Desk, far: Desk, supervisor: User, token: str) -> None:
        self.desk, self.far, self.supervisor, self.token = desk, far, supervisor, token

    @property
    def sup(self) -> dict[str, str]:
        return bearer(self.token)


async def _world(app: Any) -> World:
    """Group A (technician + supervisor) and group B (another technician), one device each."""
    tech, _ = await make_user(app, "technician")
    far_tech, _ = await make_user(app, "technician")
    supervisor, _ = await make_user(app, "supervisor")
    group = await make_group(app, [tech, supervisor])
    far_group = await make_group(app, [far_tech])
    desk = Desk(tech, await make_token(app, tech), group, await make_device(app, group))
    far = Desk(
        far_tech, await make_token(app, far_tech), far_group, await make_device(app, far_group)
    )
    return World(desk, far, supervisor, await make_token(app, supervisor))


async def _active(client: httpx.AsyncClient, desk: Desk, ticket: str) -> str:
    created = await open_session(
        client, desk, ticket={"system": "helpdesk", "external_id": ticket, "subject": "VPN"}
    )
    decided = await client.post(
        f"/consent/{consent_token(created)}/decide", data={"decision": "approve", "name": "Erika"}
    )
    assert decided.status_code == 303, decided.text
    started = await client.post(f"/api/v1/sessions/{created['id']}/start", headers=desk.headers)
    assert started.status_code == 200, started.text
    return str(created["id"])


async def test_queue_shows_only_the_supervisors_groups(app: Any, client: httpx.AsyncClient) -> None:
    w = await _world(app)
    running = await _active(client, w.desk, "HD-1")
    waiting = (await open_session(client, w.desk))["id"]
    elsewhere = await _active(client, w.far, "HD-2")

    queue = await client.get("/api/v1/sessions/queue", headers=w.sup)
    assert queue.status_code == 200, queue.text
    items = {i["session"]["id"]: i for i in queue.json()["items"]}
    assert set(items) == {running, waiting}
    assert items[waiting]["waiting"] is True
    assert items[running]["waiting"] is False
    assert items[running]["session"]["technician"]["id"] == w.desk.tech.id
    assert all(i["age_seconds"] >= 0 for i in items.values())
    # The oldest request first.
    assert [i["session"]["id"] for i in queue.json()["items"]] == [running, waiting]

    # Listing and reading follow the same groups.
    listed = await client.get("/api/v1/sessions", headers=w.sup)
    assert {s["id"] for s in listed.json()["items"]} == {running, waiting}
    assert (await client.get(f"/api/v1/sessions/{running}", headers=w.sup)).status_code == 200
    far = await client.get(f"/api/v1/sessions/{elsewhere}", headers=w.sup)
    assert far.status_code == 403
    assert far.json()["error"] == "forbidden"

    # A technician has no queue; an admin's covers every group.
    tech = await client.get("/api/v1/sessions/queue", headers=w.desk.headers)
    assert tech.status_code == 403
    assert tech.json()["error"] == "forbidden"
    admin, _ = await make_user(app, "admin")
    every = await client.get("/api/v1/sessions/queue", headers=bearer(await make_token(app, admin)))
    assert {i["session"]["id"] for i in every.json()["items"]} == {running, waiting, elsewhere}


async def test_supervisor_ends_and_revokes_with_a_reason_in_their_groups_only(
    app: Any, client: httpx.AsyncClient
) -> None:
    w = await _world(app)
    running = await _active(client, w.desk, "HD-3")
    waiting = (
        await open_session(client, w.desk, ticket={"system": "helpdesk", "external_id": "HD-4"})
    )["id"]
    elsewhere = await _active(client, w.far, "HD-5")

    bare = await client.post(f"/api/v1/sessions/{running}/end", headers=w.sup)
    assert bare.status_code == 422, bare.text
    assert "reason" in bare.json()["detail"]
    blank = await client.post(
        f"/api/v1/sessions/{running}/end", json={"reason": "   "}, headers=w.sup
    )
    assert blank.status_code == 422
    ended = await client.post(
        f"/api/v1/sessions/{running}/end",
        json={"reason": "customer data shown outside the ticket's scope"},
        headers=w.sup,
    )
    assert ended.status_code == 200, ended.text
    body = ended.json()
    assert body["state"] == "ended"
    assert body["end_reason"] == "customer data shown outside the ticket's scope"
    assert body["ended_by"] == w.supervisor.display_name

    no_reason = await client.post(f"/api/v1/sessions/{waiting}/revoke", headers=w.sup)
    assert no_reason.status_code == 422
    revoked = await client.post(
        f"/api/v1/sessions/{waiting}/revoke", json={"reason": "duplicate"}, headers=w.sup
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked"
    assert revoked.json()["end_reason"] == "revoked by a supervisor: duplicate"

    for action in ("end", "revoke"):
        far = await client.post(
            f"/api/v1/sessions/{elsewhere}/{action}", json={"reason": "x"}, headers=w.sup
        )
        assert far.status_code == 403, far.text

    # Sealed with the supervisor as the actor.
    events = await audit_events(app, "helpdesk:HD-3")
    ends = [p for t, p in events if t == "session.ended"]
    assert len(ends) == 1
    assert ends[0]["actor"]["role"] == "supervisor"
    assert ends[0]["data"]["end_reason"] == "customer data shown outside the ticket's scope"


async def test_supervisor_changes_no_users_keys_or_policies(
    app: Any, client: httpx.AsyncClient
) -> None:
    w = await _world(app)
    refused = [
        await client.post(
            "/api/v1/users",
            json={"username": "mallory", "display_name": "M", "role": "admin"},
            headers=w.sup,
        ),
        await client.patch(
            f"/api/v1/device-groups/{w.desk.group.id}",
            json={"unattended": True},
            headers=w.sup,
        ),
        await client.post(
            "/api/v1/agent/enrollment-tokens", json={"group": w.desk.group.name}, headers=w.sup
        ),
        await client.post("/api/v1/sessions", json={}, headers=w.sup),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 403]


async def test_supervisors_are_group_members_auditors_are_not(
    app: Any, client: httpx.AsyncClient
) -> None:
    admin, _ = await make_user(app, "admin")
    headers = bearer(await make_token(app, admin))
    group = await make_group(app, [])
    supervisor, _ = await make_user(app, "supervisor")
    auditor, _ = await make_user(app, "auditor")
    path = f"/api/v1/device-groups/{group.id}/members"
    added = await client.put(f"{path}/{supervisor.id}", headers=headers)
    assert added.status_code == 200, added.text
    refused = await client.put(f"{path}/{auditor.id}", headers=headers)
    assert refused.status_code == 422
    assert "supervisors" in refused.json()["detail"]
