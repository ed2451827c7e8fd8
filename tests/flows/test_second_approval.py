"""Second-person approval (docs/OVERSIGHT.md) through the API and the pages, on both
databases: the group's policy (narrowed by ticket priority) holds a request in
``awaiting_approval`` without asking the end user; the requester cannot approve it; another
technician or the group's supervisor sees what the end user will see and approves (the end
user is asked now) or denies with a reason; an unanswered request expires; every step is
sealed in the ticket's stream, in order."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from broker.db.base import utcnow
from broker.tasks import sweep_once
from tests.factories import (
    Desk,
    audit_events,
    bearer,
    make_device,
    make_group,
    make_token,
    make_user,
    open_session,
    update_session_row,
)
from tests.ui.browsers import browser


async def _setup(app: Any, **policy: Any) -> dict[str, Any]:
    tech, _ = await make_user(app, "technician", username="tina")
    colleague, _ = await make_user(app, "technician", username="carl")
    supervisor, _ = await make_user(app, "supervisor", username="sabine")
    outsider, _ = await make_user(app, "technician", username="otto")
    group = await make_group(app, [tech, colleague, supervisor], approval_required=True, **policy)
    await make_group(app, [outsider])
    device = await make_device(app, group, name="erika-pc")
    desk = Desk(tech, await make_token(app, tech), group, device)
    tokens = {
        name: bearer(await make_token(app, user))
        for name, user in (
            ("colleague", colleague),
            ("supervisor", supervisor),
            ("outsider", outsider),
        )
    }
    return {"desk": desk, "tokens": tokens, "colleague": colleague, "supervisor": supervisor}


def _ticket(external_id: str, priority: str | None = None) -> dict[str, Any]:
    ticket: dict[str, Any] = {"system": "helpdesk", "external_id": external_id, "subject": "VPN"}
    if priority is not None:
        ticket["priority"] = priority
    return ticket


async def test_second_person_approves_then_the_end_user_is_asked(
    app: Any, client: httpx.AsyncClient
) -> None:
    w = await _setup(app)
    desk, tokens = w["desk"], w["tokens"]
    created = await open_session(client, desk, ticket=_ticket("HD-30"))
    sid = created["id"]
    assert created["state"] == "awaiting_approval"
    assert created["consent"] is None  # nobody asked the end user yet

    # Self-approval is impossible; an outsider of the group cannot either.
    own = await client.post(
        f"/api/v1/sessions/{sid}/approval", json={"decision": "approve"}, headers=desk.headers
    )
    assert own.status_code == 403
    assert "your own request" in own.json()["detail"]
    outside = await client.post(
        f"/api/v1/sessions/{sid}/approval", json={"decision": "approve"}, headers=tokens["outsider"]
    )
    assert outside.status_code == 403
    listed = await client.get("/api/v1/sessions/approvals", headers=desk.headers)
    assert listed.json()["items"] == []  # not the requester's to approve

    # The colleague sees it with what the end user will see.
    mine = await client.get("/api/v1/sessions/approvals", headers=tokens["colleague"])
    assert [s["id"] for s in mine.json()["items"]] == [sid]
    preview = await client.get(f"/api/v1/sessions/{sid}/approval", headers=tokens["colleague"])
    assert preview.status_code == 200, preview.text
    sees = preview.json()["end_user_sees"]
    assert sees["technician"] == desk.tech.display_name
    assert sees["ticket"] == "HD-30"
    assert sees["device"] == "erika-pc"
    assert sees["capabilities"] == ["control", "view"]
    assert sees["duration_minutes"] == 30

    approved = await client.post(
        f"/api/v1/sessions/{sid}/approval",
        json={"decision": "approve", "reason": "checked the ticket"},
        headers=tokens["colleague"],
    )
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["state"] == "awaiting_consent"
    assert body["consent"]["code"]
    again = await client.post(
        f"/api/v1/sessions/{sid}/approval",
        json={"decision": "approve"},
        headers=tokens["colleague"],
    )
    assert again.status_code == 409

    # The end user is asked now, with the code made at the approval.
    token = body["consent"]["url"].rsplit("/", 1)[1]
    decided = await client.post(
        f"/consent/{token}/decide", data={"decision": "approve", "name": "Erika"}
    )
    assert decided.status_code == 303
    state = await client.get(f"/api/v1/sessions/{sid}", headers=desk.headers)
    assert state.json()["state"] == "approved"

    types = [t for t, _ in await audit_events(app, "helpdesk:HD-30")]
    order = [
        "session.requested",
        "session.awaiting_approval",
        "approval.granted",
        "session.awaiting_consent",
        "consent.requested",
        "consent.decided",
        "session.approved",
    ]
    assert [t for t in types if t in order] == order
    granted = [p for t, p in await audit_events(app, "helpdesk:HD-30") if t == "approval.granted"]
    assert granted[0]["data"]["reason"] == "checked the ticket"
    assert granted[0]["actor"]["role"] == "technician"


async def test_supervisor_denies_with_a_reason_on_the_page(
    app: Any, client: httpx.AsyncClient
) -> None:
    w = await _setup(app)
    desk = w["desk"]
    sid = (await open_session(client, desk, ticket=_ticket("HD-31")))["id"]
    sup = await browser(app, w["supervisor"])
    page = await sup.get("/ui/approvals")
    assert page.status_code == 200
    assert f'data-session="{sid}"' in page.text
    assert desk.tech.display_name in page.text
    assert "Printer driver keeps crashing after the update" in page.text  # the reason
    no_reason = await sup.post(f"/ui/approvals/{sid}", {"decision": "deny", "reason": ""})
    assert no_reason.status_code == 422
    denied = await sup.post(
        f"/ui/approvals/{sid}", {"decision": "deny", "reason": "no change window"}
    )
    assert denied.status_code == 303, denied.text
    got = await client.get(f"/api/v1/sessions/{sid}", headers=desk.headers)
    assert got.json()["state"] == "denied"
    assert "no change window" in got.json()["end_reason"]
    events = await audit_events(app, "helpdesk:HD-31")
    denials = [p for t, p in events if t == "approval.denied"]
    assert len(denials) == 1
    assert denials[0]["actor"]["role"] == "supervisor"
    assert "consent.requested" not in [t for t, _ in events]  # the end user was never asked

    # The requester's own page shows the wait; the requester has nothing to approve.
    tech = await browser(app, desk.tech)
    assert "Nothing waits for your approval" in (await tech.get("/ui/approvals")).text
    for c in (sup, tech):
        await c.client.aclose()


async def test_policy_narrowed_by_priority_and_expiry(app: Any, client: httpx.AsyncClient) -> None:
    w = await _setup(app, approval_priorities=["High"])
    desk = w["desk"]
    low = await open_session(client, desk, ticket=_ticket("HD-32", priority="low"))
    assert low["state"] == "awaiting_consent"
    assert low["consent"]["code"]
    high = await open_session(client, desk, ticket=_ticket("HD-33", priority="high"))
    assert high["state"] == "awaiting_approval"

    # Nobody approves in time: it expires like an unanswered consent request.
    await update_session_row(app, high["id"], deadline_at=utcnow() - timedelta(seconds=1))
    await sweep_once(app)
    got = await client.get(f"/api/v1/sessions/{high['id']}", headers=desk.headers)
    assert got.json()["state"] == "expired"
    late = await client.post(
        f"/api/v1/sessions/{high['id']}/approval",
        json={"decision": "approve"},
        headers=w["tokens"]["supervisor"],
    )
    assert late.status_code == 409
    expired = [p for t, p in await audit_events(app, "helpdesk:HD-33") if t == "session.expired"]
    assert expired[0]["data"]["why"] == "no second person approved in time"


async def test_group_policy_through_the_api(app: Any, client: httpx.AsyncClient) -> None:
    admin, _ = await make_user(app, "admin")
    headers = bearer(await make_token(app, admin))
    created = await client.post(
        "/api/v1/device-groups",
        json={"name": "bank-desk", "approval_required": True, "approval_categories": ["Payments"]},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["approval_required"] is True
    assert created.json()["approval_categories"] == ["Payments"]
    patched = await client.patch(
        f"/api/v1/device-groups/{created.json()['id']}",
        json={"approval_required": False},
        headers=headers,
    )
    assert patched.json()["approval_required"] is False
    bad = await client.patch(
        f"/api/v1/device-groups/{created.json()['id']}",
        json={"approval_required": "yes"},
        headers=headers,
    )
    assert bad.status_code == 422


async def test_admin_sets_the_policy_and_adds_a_supervisor_on_the_pages(app: Any) -> None:
    admin, _ = await make_user(app, "admin")
    supervisor, _ = await make_user(app, "supervisor", username="sven")
    page = await browser(app, admin)
    created = await page.post(
        "/ui/admin/groups",
        {
            "name": "payments",
            "approval_required": "on",
            "approval_priorities": "High, Urgent",
            "approval_categories": "",
        },
    )
    assert created.status_code == 303, created.text
    group_url = created.headers["location"]
    form = (await page.get(group_url)).text
    assert 'name="approval_required" checked' in form
    assert 'value="High, Urgent"' in form
    assert "sven" in form  # a supervisor can be made a member
    group_id = group_url.rsplit("/", 1)[1]
    added = await page.post(f"{group_url}/members", {"user_id": supervisor.id})
    assert added.status_code == 303, added.text
    headers = bearer(await make_token(app, admin))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://broker.test"
    ) as api:
        got = (await api.get(f"/api/v1/device-groups/{group_id}", headers=headers)).json()
    assert got["approval_required"] is True
    assert got["approval_priorities"] == ["High", "Urgent"]
    assert [m["id"] for m in got["members"]] == [supervisor.id]
    await page.client.aclose()


async def test_the_request_form_carries_priority_to_the_policy(app: Any) -> None:
    """The technician's console form takes the ticket's priority: the group's policy then
    holds a high-priority request for a second person, and asks the end user at once for
    another."""
    w = await _setup(app, approval_priorities=["High"])
    desk = w["desk"]
    tech = await browser(app, desk.tech)
    body = {
        "system": "helpdesk",
        "ticket": "HD-40",
        "subject": "VPN",
        "device_id": desk.device.id,
        "reason": "VPN client will not connect",
        "capabilities": "shell",
        "duration_minutes": "30",
    }
    form = await tech.get("/ui/new")
    assert 'name="priority"' in form.text
    assert 'name="category"' in form.text
    high = await tech.post("/ui/sessions", {**body, "priority": "high"})
    assert high.status_code == 303, high.text
    assert "awaiting_approval" in (await tech.get(high.headers["location"])).text
    low = await tech.post("/ui/sessions", {**body, "ticket": "HD-41", "priority": "low"})
    assert low.status_code == 303, low.text
    low_page = (await tech.get(low.headers["location"])).text
    assert "consent-code" in low_page
    assert "awaiting_approval" not in low_page
    await tech.client.aclose()
