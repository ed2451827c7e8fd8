"""The full session life cycle through HTTP, one test per path, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from broker.db.base import utcnow
from broker.sessions.service import sweep_deadlines
from tests.factories import (
    Desk,
    audit_events,
    bearer,
    consent_token,
    make_token,
    make_user,
    open_session,
    update_session_row,
)

REF = "helpdesk:HD-4711"


async def approve(client: httpx.AsyncClient, token: str, name: str = "Erika") -> httpx.Response:
    return await client.post(
        f"/api/v1/consent/{token}/decision", json={"decision": "approve", "name": name}
    )


async def state_of(client: httpx.AsyncClient, desk: Desk, session_id: str) -> str:
    response = await client.get(f"/api/v1/sessions/{session_id}", headers=desk.headers)
    assert response.status_code == 200, response.text
    state: str = response.json()["state"]
    return state


async def test_approve_start_end(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(client, desk)
    assert created["state"] == "awaiting_consent"
    code = created["consent"]["code"]
    assert len(code) == 11
    assert code[4] == "-"
    assert created["consent"]["url"].startswith(app.state.settings.base_url + "/consent/")
    sid = created["id"]

    decided = await approve(client, consent_token(created))
    assert decided.status_code == 200, decided.text
    assert decided.json()["state"] == "approved"
    assert decided.json()["valid_until"] is not None

    started = await client.post(f"/api/v1/sessions/{sid}/start", headers=desk.headers)
    assert started.status_code == 200, started.text
    assert started.json()["state"] == "active"

    ended = await client.post(
        f"/api/v1/sessions/{sid}/end", json={"reason": "printer fixed"}, headers=desk.headers
    )
    assert ended.status_code == 200, ended.text
    body = ended.json()
    assert body["state"] == "ended"
    assert body["end_reason"] == "printer fixed"
    for stamp in ("requested_at", "awaiting_consent_at", "approved_at", "active_at", "ended_at"):
        assert body[stamp] is not None, stamp

    types = [t for t, _ in await audit_events(app, REF)]
    for expected in (
        "session.requested",
        "session.awaiting_consent",
        "consent.requested",
        "session.approved",
        "consent.decided",
        "session.active",
        "session.ended",
    ):
        assert expected in types, (expected, types)
    receipt = next(p for t, p in await audit_events(app, REF) if t == "consent.decided")["data"]
    assert receipt["decided_by"] == "Erika"
    assert receipt["decided_from"] == "198.51.100.10"
    assert receipt["capabilities"] == ["control", "view"]
    assert receipt["valid_until"] is not None


async def test_deny(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(client, desk)
    denied = await client.post(
        f"/api/v1/consent/{consent_token(created)}/decision",
        json={"decision": "deny", "name": "Erika"},
    )
    assert denied.status_code == 200, denied.text
    assert denied.json()["state"] == "denied"
    assert await state_of(client, desk, created["id"]) == "denied"
    start = await client.post(f"/api/v1/sessions/{created['id']}/start", headers=desk.headers)
    assert start.status_code == 409
    assert "session.denied" in [t for t, _ in await audit_events(app, REF)]


async def test_expire_by_sweep(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(client, desk)
    await update_session_row(app, created["id"], deadline_at=utcnow() - timedelta(seconds=1))
    async with app.state.sessionmaker() as db, db.begin():
        assert await sweep_deadlines(db) == 1
    async with app.state.sessionmaker() as db, db.begin():
        assert await sweep_deadlines(db) == 0
    assert await state_of(client, desk, created["id"]) == "expired"
    late = await approve(client, consent_token(created))
    assert late.status_code == 409
    assert "session.expired" in [t for t, _ in await audit_events(app, REF)]


async def test_expire_on_read(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(client, desk)
    await update_session_row(app, created["id"], deadline_at=utcnow() - timedelta(seconds=1))
    # No sweep: the consent page itself notices, and approving is refused.
    view = await client.get(f"/api/v1/consent/{consent_token(created)}")
    assert view.json()["state"] == "expired"
    assert view.json()["can_decide"] is False
    assert (await approve(client, consent_token(created))).status_code == 409


async def test_expire_on_action(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(client, desk)
    await update_session_row(app, created["id"], deadline_at=utcnow() - timedelta(seconds=1))
    refused = await approve(client, consent_token(created))
    assert refused.status_code == 409
    # The expiry found while refusing was kept.
    assert await state_of(client, desk, created["id"]) == "expired"


async def test_approved_but_never_started_expires(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    created = await open_session(client, desk)
    assert (await approve(client, consent_token(created))).status_code == 200
    await update_session_row(app, created["id"], deadline_at=utcnow() - timedelta(seconds=1))
    start = await client.post(f"/api/v1/sessions/{created['id']}/start", headers=desk.headers)
    assert start.status_code == 409
    assert "expired" in start.json()["detail"]
    assert await state_of(client, desk, created["id"]) == "expired"


async def test_short_consent_timeout_from_group(app: Any, client: httpx.AsyncClient) -> None:
    from tests.factories import make_desk

    desk = await make_desk(app, consent_timeout_seconds=45)
    created = await open_session(client, desk)
    remaining = (
        httpx_time(created["consent"]["expires_at"]) - httpx_time(created["requested_at"])
    ).total_seconds()
    assert 44 <= remaining <= 46


def httpx_time(value: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(value)


async def test_time_limit_ends_active_session(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    created = await open_session(client, desk)
    await approve(client, consent_token(created))
    await client.post(f"/api/v1/sessions/{created['id']}/start", headers=desk.headers)
    await update_session_row(app, created["id"], deadline_at=utcnow() - timedelta(seconds=1))
    async with app.state.sessionmaker() as db, db.begin():
        assert await sweep_deadlines(db) == 1
    got = (await client.get(f"/api/v1/sessions/{created['id']}", headers=desk.headers)).json()
    assert got["state"] == "ended"
    assert got["end_reason"] == "time limit"


async def test_time_limit_on_read(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(client, desk)
    await approve(client, consent_token(created))
    await client.post(f"/api/v1/sessions/{created['id']}/start", headers=desk.headers)
    await update_session_row(app, created["id"], deadline_at=utcnow() - timedelta(seconds=1))
    listed = await client.get("/api/v1/sessions?state=active", headers=desk.headers)
    assert listed.json()["items"] == []
    assert await state_of(client, desk, created["id"]) == "ended"


async def test_end_user_revokes_active(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(client, desk)
    token = consent_token(created)
    await approve(client, token)
    await client.post(f"/api/v1/sessions/{created['id']}/start", headers=desk.headers)
    revoked = await client.post(f"/api/v1/consent/{token}/revoke", json={"name": "Erika"})
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked"
    got = (await client.get(f"/api/v1/sessions/{created['id']}", headers=desk.headers)).json()
    assert got["end_reason"] == "revoked by the end user"
    events = await audit_events(app, REF)
    revoked_event = next(p for t, p in events if t == "session.revoked")
    assert revoked_event["actor"]["kind"] == "end_user"


async def test_end_user_revokes_approved(client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(client, desk)
    token = consent_token(created)
    await approve(client, token)
    revoked = await client.post(f"/api/v1/consent/{token}/revoke")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked"


async def test_admin_revokes(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    admin, _ = await make_user(app, "admin")
    admin_token = await make_token(app, admin)
    created = await open_session(client, desk)
    await approve(client, consent_token(created))
    await client.post(f"/api/v1/sessions/{created['id']}/start", headers=desk.headers)
    revoked = await client.post(
        f"/api/v1/sessions/{created['id']}/revoke",
        json={"reason": "suspicious activity"},
        headers=bearer(admin_token),
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked"
    assert revoked.json()["end_reason"] == "revoked by an admin: suspicious activity"
    # A technician may not revoke (they cancel or end instead).
    other = await open_session(client, desk, ticket={"system": "helpdesk", "external_id": "2"})
    refused = await client.post(f"/api/v1/sessions/{other['id']}/revoke", headers=desk.headers)
    assert refused.status_code == 403


async def test_admin_ends_active(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    admin, _ = await make_user(app, "admin")
    admin_token = await make_token(app, admin)
    created = await open_session(client, desk)
    await approve(client, consent_token(created))
    await client.post(f"/api/v1/sessions/{created['id']}/start", headers=desk.headers)
    ended = await client.post(f"/api/v1/sessions/{created['id']}/end", headers=bearer(admin_token))
    assert ended.status_code == 200, ended.text
    assert ended.json()["ended_by"] == admin.display_name


async def test_technician_cancels_pending(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(client, desk)
    cancelled = await client.post(f"/api/v1/sessions/{created['id']}/cancel", headers=desk.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "revoked"
    assert cancelled.json()["end_reason"] == "cancelled by the technician"
    assert (await approve(client, consent_token(created))).status_code == 409


async def test_unattended_allowed(app: Any, client: httpx.AsyncClient) -> None:
    from tests.factories import make_desk

    desk = await make_desk(app, unattended_allowed=True)
    created = await open_session(client, desk, unattended=True)
    assert created["state"] == "approved"
    assert created["unattended"] is True
    assert created["consent"]["code"] is None
    view = (await client.get(f"/api/v1/consent/{consent_token(created)}")).json()
    assert view["decided_by"] == "policy:unattended"
    assert view["unattended"] is True
    assert view["can_revoke"] is True
    approved = next(p for t, p in await audit_events(app, REF) if t == "session.approved")
    assert approved["data"]["unattended"] is True
    assert approved["actor"]["name"] == "policy:unattended"
    started = await client.post(f"/api/v1/sessions/{created['id']}/start", headers=desk.headers)
    assert started.json()["state"] == "active"


async def test_rating_after_end(client: httpx.AsyncClient, desk: Desk) -> None:
    created = await open_session(client, desk)
    token = consent_token(created)
    await approve(client, token)
    too_early = await client.post(f"/api/v1/consent/{token}/rating", json={"score": 5})
    assert too_early.status_code == 409
    await client.post(f"/api/v1/sessions/{created['id']}/start", headers=desk.headers)
    await client.post(f"/api/v1/sessions/{created['id']}/end", headers=desk.headers)
    rated = await client.post(
        f"/api/v1/consent/{token}/rating", json={"score": 4, "comment": "quick, thanks 👍"}
    )
    assert rated.status_code == 200, rated.text
    assert rated.json()["rating"] == 4
    again = await client.post(f"/api/v1/consent/{token}/rating", json={"score": 1})
    assert again.status_code == 409
    bad = await client.post(f"/api/v1/consent/{token}/rating", json={"score": 6})
    assert bad.status_code == 422
