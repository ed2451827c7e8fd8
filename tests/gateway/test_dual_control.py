"""Dual-control playback (docs/OVERSIGHT.md): under a device group's policy a replay or a
plaintext export needs a second, different auditor's approval, which opens it to the one who
asked, alone, for a limited time; each step sealed. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update

from broker.db.base import utcnow
from broker.devices.models import DeviceGroup
from broker.gateway.models import PlaybackRequest
from broker.gateway.recording import open_recorder
from broker.sessions import service as sessions
from tests.factories import (
    audit_events,
    bearer,
    consent_token,
    make_desk,
    make_token,
    make_user,
    open_session,
)
from tests.ui.browsers import browser

STREAM = "helpdesk:HD-4711"
V1 = "/api/v1"


async def _recorded_session(app: Any, client: httpx.AsyncClient) -> tuple[Any, str]:
    desk = await make_desk(app)
    created = await open_session(client, desk)
    decided = await client.post(
        f"{V1}/consent/{consent_token(created)}/decision",
        json={"decision": "approve", "name": "Erika"},
    )
    assert decided.status_code == 200, decided.text
    sid = created["id"]
    async with app.state.sessionmaker() as db:
        record, _ = await sessions.load(db, sid)
    recorder = await open_recorder(
        app.state.audit_log, app.state.engine.begin, record, chunk_seconds=60
    )
    await recorder.output(b"$ echo two-auditors-77\r\n")
    await recorder.close("session ended")
    return desk, sid


async def test_replay_and_export_under_dual_control(app: Any, client: httpx.AsyncClient) -> None:
    desk, sid = await _recorded_session(app, client)
    admin = bearer(await make_token(app, (await make_user(app, "admin"))[0]))
    first = bearer(await make_token(app, (await make_user(app, "auditor"))[0]))
    second = bearer(await make_token(app, (await make_user(app, "auditor"))[0]))
    replay = f"{V1}/gateway/sessions/{sid}/replay"
    asking = {"reason": "complaint CX-12 review"}

    # Policy off: replay as before, and no approval needed.
    before = await client.post(replay, json=asking, headers=first)
    assert before.status_code == 200, before.text
    assert "two-auditors-77" in before.text

    # The admin switches the group's policy on through the group API.
    group = f"{V1}/device-groups/{desk.group.id}"
    on = await client.patch(group, json={"dual_control_playback": True}, headers=admin)
    assert on.status_code == 200, on.text
    assert on.json()["dual_control_playback"] is True

    refused = await client.post(replay, json=asking, headers=first)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "policy_denied"
    assert "dual control" in refused.json()["detail"]

    asked = await client.post(
        f"{V1}/audit/playback-requests", json={"session_id": sid, **asking}, headers=first
    )
    assert asked.status_code == 201, asked.text
    rid = asked.json()["id"]
    assert asked.json()["state"] == "pending"
    decision = f"{V1}/audit/playback-requests/{rid}/decision"

    own = await client.post(decision, json={"decision": "approve"}, headers=first)
    assert own.status_code == 403, own.text
    assert "your own request" in own.json()["detail"]
    still = await client.post(replay, json=asking, headers=first)
    assert still.status_code == 403

    listed = await client.get(f"{V1}/audit/playback-requests", headers=second)
    assert rid in [r["id"] for r in listed.json()["requests"]]
    approved = await client.post(decision, json={"decision": "approve"}, headers=second)
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "approved"
    again = await client.post(decision, json={"decision": "deny", "reason": "no"}, headers=second)
    assert again.status_code == 409, again.text

    played = await client.post(replay, json=asking, headers=first)
    assert played.status_code == 200, played.text
    assert "two-auditors-77" in played.text
    approver = await client.post(replay, json=asking, headers=second)
    assert approver.status_code == 403, approver.text

    # The approval's time runs out: refused again.
    async with app.state.sessionmaker() as db:
        await db.execute(
            update(PlaybackRequest)
            .where(PlaybackRequest.id == rid)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await db.commit()
    expired = await client.post(replay, json=asking, headers=first)
    assert expired.status_code == 403, expired.text
    mine = await client.get(f"{V1}/audit/playback-requests", headers=first)
    assert {r["id"]: r["state"] for r in mine.json()["requests"]}[rid] == "expired"

    # Plaintext export of the ticket: refused, asked, denied (a reason needed), asked, approved.
    bundle = f"{V1}/audit/tickets/helpdesk/HD-4711/bundle"
    plain = {"reason": "court order 7", "include_plaintext": True}
    sealed = await client.post(bundle, json={"reason": "court order 7"}, headers=first)
    assert sealed.status_code == 200, sealed.text  # no plaintext: no second auditor needed
    no = await client.post(bundle, json=plain, headers=first)
    assert no.status_code == 403, no.text
    assert "dual control" in no.json()["detail"]
    ticket = {"system": "helpdesk", "external_id": "HD-4711", "reason": "court order 7"}
    denied = (await client.post(f"{V1}/audit/playback-requests", json=ticket, headers=first)).json()
    deny = f"{V1}/audit/playback-requests/{denied['id']}/decision"
    bare = await client.post(deny, json={"decision": "deny"}, headers=second)
    assert bare.status_code == 422, bare.text
    done = await client.post(deny, json={"decision": "deny", "reason": "no order"}, headers=second)
    assert done.json()["state"] == "denied"
    assert (await client.post(bundle, json=plain, headers=first)).status_code == 403
    export = (await client.post(f"{V1}/audit/playback-requests", json=ticket, headers=first)).json()
    ok = await client.post(
        f"{V1}/audit/playback-requests/{export['id']}/decision",
        json={"decision": "approve", "reason": "order seen"},
        headers=second,
    )
    assert ok.status_code == 200, ok.text
    exported = await client.post(bundle, json=plain, headers=first)
    assert exported.status_code == 200, exported.text
    assert (await client.post(bundle, json=plain, headers=second)).status_code == 403

    kinds = [t for t, _ in await audit_events(app, STREAM) if t.startswith("playback.")]
    assert kinds == [
        "playback.requested",
        "playback.approved",
        "playback.requested",
        "playback.denied",
        "playback.requested",
        "playback.approved",
    ]
    sealed_ask = next(p for t, p in await audit_events(app, STREAM) if t == "playback.requested")
    assert sealed_ask["data"]["reason"] == "complaint CX-12 review"
    assert sealed_ask["actor"]["role"] == "auditor"


async def test_pages_ask_approve_and_replay(app: Any, client: httpx.AsyncClient) -> None:
    desk, sid = await _recorded_session(app, client)
    async with app.state.sessionmaker() as db:
        await db.execute(
            update(DeviceGroup)
            .where(DeviceGroup.id == desk.group.id)
            .values(dual_control_playback=True)
        )
        await db.commit()
    first = await browser(app, (await make_user(app, "auditor"))[0])
    second = await browser(app, (await make_user(app, "auditor"))[0])
    replay = f"/ui/audit/sessions/{sid}/replay"
    try:
        blocked = await first.post(replay, {"reason": "review"})
        assert blocked.status_code == 403, blocked.text
        assert "dual control" in blocked.text
        assert "Ask a second auditor" in (await first.get(replay)).text
        asked = await first.post("/ui/audit/playback", {"session_id": sid, "reason": "INC-3"})
        assert asked.status_code == 303, asked.text
        assert "Waiting for a second auditor" in (await first.get("/ui/audit/playback")).text
        listing = (await second.get("/ui/audit/playback")).text
        (rid,) = {p.split('"')[0] for p in listing.split('action="/ui/audit/playback/')[1:]}
        own = await first.post(f"/ui/audit/playback/{rid}", {"decision": "approve"})
        assert own.status_code == 403, own.text
        decided = await second.post(f"/ui/audit/playback/{rid}", {"decision": "approve"})
        assert decided.status_code == 303, decided.text
        played = await first.post(replay, {"reason": "review"})
        assert played.status_code == 200, played.text
        assert "two-auditors-77" in played.text
        assert (await second.post(replay, {"reason": "review"})).status_code == 403
    finally:
        await first.client.aclose()
        await second.client.aclose()


async def test_admin_sets_the_policy_on_the_group_form(app: Any, client: httpx.AsyncClient) -> None:
    admin, _ = await make_user(app, "admin")
    page = await browser(app, admin)
    created = await page.post(
        "/ui/admin/groups", {"name": "records-desk", "dual_control_playback": "on"}
    )
    assert created.status_code == 303, created.text
    group_url = created.headers["location"]
    assert 'name="dual_control_playback" checked' in (await page.get(group_url)).text
    group_id = group_url.rsplit("/", 1)[1]
    headers = bearer(await make_token(app, admin))
    read = await client.get(f"{V1}/device-groups/{group_id}", headers=headers)
    assert read.json()["dual_control_playback"] is True
    bad = await client.patch(
        f"{V1}/device-groups/{group_id}", json={"dual_control_playback": "yes"}, headers=headers
    )
    assert bad.status_code == 422, bad.text
    assert set(bad.json()) >= {"error", "detail"}
