"""The end user's history link: from the consent page to every session on that device only,
each with its consent receipt; bad and expired links refused."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from typing import Any

import httpx
import rfc8785
from sqlalchemy import update

from broker.consent.models import ConsentRequest
from broker.db.base import utcnow
from tests.factories import Desk, audit_events, consent_token, make_desk, open_session

REF = "helpdesk:HD-4711"


async def _approve(client: httpx.AsyncClient, token: str) -> None:
    body = {"decision": "approve", "name": "Erika Mustermann"}
    response = await client.post(f"/api/v1/consent/{token}/decision", json=body)
    assert response.status_code == 200, response.text


async def _history_path(client: httpx.AsyncClient, token: str) -> str:
    page = await client.get(f"/consent/{token}")
    assert page.status_code == 200
    found = re.search(r'href="(/history/[^"]+)" id="history-link"', page.text)
    assert found, "the consent page links to the device's history"
    return found.group(1)


async def test_history_shows_this_device_sessions_and_their_receipts(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    first = await open_session(client, desk, reason="Printer driver keeps crashing again")
    await _approve(client, consent_token(first))
    sid = first["id"]
    assert (await client.post(f"/api/v1/sessions/{sid}/start", headers=desk.headers)).is_success
    ended = await client.post(
        f"/api/v1/sessions/{sid}/end", json={"reason": "fixed"}, headers=desk.headers
    )
    assert ended.status_code == 200
    second = await open_session(client, desk, reason="Second look at the spooler service")
    denied = await client.post(
        f"/api/v1/consent/{consent_token(second)}/decision",
        json={"decision": "deny", "name": "Erika Mustermann"},
    )
    assert denied.status_code == 200
    other = await make_desk(app)
    elsewhere = await open_session(client, other, reason="Someone else's computer entirely")

    path = await _history_path(client, consent_token(second))
    page = await client.get(path)
    assert page.status_code == 200
    assert desk.device.name in page.text
    assert "Printer driver keeps crashing again" in page.text
    assert "Second look at the spooler service" in page.text
    assert desk.tech.display_name in page.text
    assert "Someone else&#39;s computer" not in page.text
    assert "Someone else's computer" not in page.text
    assert elsewhere["id"] not in page.text

    api = await client.get(f"/api/v1{path}")
    assert api.status_code == 200
    sessions = {s["session_id"]: s for s in api.json()["sessions"]}
    assert set(sessions) == {first["id"], second["id"]}
    done = sessions[first["id"]]
    assert done["state"] == "ended"
    assert sorted(done["capabilities"]) == ["control", "view"]
    assert done["technician"] == desk.tech.display_name
    assert done["decided_by"] == "Erika Mustermann"
    assert done["ran_minutes"] is not None
    assert sessions[second["id"]]["state"] == "denied"

    # The download is the receipt sealed in consent.decided, with its digest and place.
    download = await client.get(f"{path}/receipts/{first['id']}")
    assert download.status_code == 200
    assert "attachment" in download.headers["content-disposition"]
    document = json.loads(download.text)
    assert document["event"] == "consent.decided"
    assert document["receipt"]["session_id"] == first["id"]
    assert document["receipt"]["decision"] == "approve"
    digest = hashlib.sha256(rfc8785.dumps(document["receipt"])).hexdigest()
    assert document["receipt_sha256"] == digest
    approved = next(
        p
        for t, p in await audit_events(app, REF)
        if t == "session.approved" and p["data"]["session_id"] == first["id"]
    )
    assert approved["data"]["receipt_digest"] == digest
    assert isinstance(document["log"]["position"], int)

    # Another device's session is not in this history, whatever id is asked for.
    foreign = await client.get(f"/api/v1{path}/receipts/{elsewhere['id']}")
    assert foreign.status_code == 404
    unknown = await client.get(f"/api/v1{path}/receipts/no-such-session")
    assert unknown.status_code == 404
    assert foreign.json()["detail"] == unknown.json()["detail"]

    viewed = [p for t, p in await audit_events(app, REF) if t == "history.viewed"]
    assert any(p["data"].get("receipt_of") == first["id"] for p in viewed)
    assert all(p["data"]["device_id"] == desk.device.id for p in viewed)


async def test_forged_links_are_404_and_old_ones_410(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    created = await open_session(client, desk)
    path = await _history_path(client, consent_token(created))
    request_id, mac = path.removeprefix("/history/").split(".")
    forged = f"/history/{request_id}.{'B' if mac[0] == 'A' else 'A'}{mac[1:]}"
    for bad in (forged, "/history/nothing", f"/history/{consent_token(created)}"):
        page = await client.get(bad)
        assert page.status_code == 404, bad
        assert "does not work" in page.text
        api = await client.get(f"/api/v1{bad}")
        assert api.status_code == 404
        assert api.json()["error"] == "not_found"

    # Past the retention the same link is gone (410), page, API and receipt alike.
    days = app.state.settings.consent_link_retention_days
    async with app.state.sessionmaker() as db:
        await db.execute(
            update(ConsentRequest)
            .where(ConsentRequest.session_id == created["id"])
            .values(created_at=utcnow() - timedelta(days=days, minutes=1))
        )
        await db.commit()
    page = await client.get(path)
    assert page.status_code == 410
    assert "expired" in page.text
    api = await client.get(f"/api/v1{path}")
    assert api.status_code == 410
    assert api.json()["error"] == "gone"
    receipt = await client.get(f"{path}/receipts/{created['id']}")
    assert receipt.status_code == 410
