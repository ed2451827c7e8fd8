"""Every action in every state: the allowed ones succeed, every other one is a 409 that says
which state the session is in and where it could go."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from broker.auth.models import User
from broker.db.base import utcnow
from broker.sessions.states import SessionState
from tests.factories import (
    Desk,
    bearer,
    consent_token,
    make_token,
    make_user,
    open_session,
    update_session_row,
)

S = SessionState
# action → the states it is allowed from (docs/PRODUCT.md's machine, narrowed per actor).
ALLOWED: dict[str, set[SessionState]] = {
    "start": {S.approved},
    "end": {S.active},
    "cancel": {S.awaiting_approval, S.awaiting_consent, S.approved},
    "admin_revoke": {S.awaiting_approval, S.awaiting_consent, S.approved, S.active},
    "approve": {S.awaiting_consent},
    "user_revoke": {S.approved, S.active},
}


async def _act(
    client: httpx.AsyncClient, desk: Desk, admin: str, action: str, created: dict[str, Any]
) -> httpx.Response:
    sid, token = created["id"], consent_token(created)
    if action == "approve":
        return await client.post(
            f"/api/v1/consent/{token}/decision", json={"decision": "approve", "name": "Erika"}
        )
    if action == "user_revoke":
        return await client.post(f"/api/v1/consent/{token}/revoke")
    if action == "admin_revoke":
        return await client.post(f"/api/v1/sessions/{sid}/revoke", headers=bearer(admin))
    return await client.post(f"/api/v1/sessions/{sid}/{action}", headers=desk.headers)


@pytest.mark.parametrize("state", list(SessionState))
async def test_every_action_in_every_state(
    app: Any, client: httpx.AsyncClient, desk: Desk, state: SessionState
) -> None:
    async with app.state.sessionmaker() as db:
        await db.execute(
            update(User).where(User.id == desk.tech.id).values(max_concurrent_sessions=50)
        )
        await db.commit()
    admin, _ = await make_user(app, "admin")
    admin_token = await make_token(app, admin)
    for action, allowed in ALLOWED.items():
        created = await open_session(client, desk)
        await update_session_row(
            app, created["id"], state=state.value, deadline_at=utcnow() + timedelta(hours=1)
        )
        response = await _act(client, desk, admin_token, action, created)
        if state in allowed:
            assert response.status_code == 200, (action, state, response.text)
            continue
        assert response.status_code == 409, (action, state, response.text)
        body = response.json()
        assert body["error"] in ("illegal_transition", "conflict"), body
        assert state.value in body["detail"], (action, body)
        got = await client.get(f"/api/v1/sessions/{created['id']}", headers=desk.headers)
        assert got.json()["state"] == state.value, "a refused action must change nothing"


async def test_message_names_state_and_allowed_moves(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    created = await open_session(client, desk)
    await client.post(
        f"/api/v1/consent/{consent_token(created)}/decision",
        json={"decision": "deny", "name": "Erika"},
    )
    start = await client.post(f"/api/v1/sessions/{created['id']}/start", headers=desk.headers)
    assert start.status_code == 409
    assert start.json() == {
        "error": "illegal_transition",
        "detail": f"session {created['id']} is denied; cannot go to active "
        "(allowed from denied: none)",
    }
    end = await client.post(f"/api/v1/sessions/{created['id']}/end", headers=desk.headers)
    assert end.status_code == 409


async def test_other_technician_cannot_act(app: Any, client: httpx.AsyncClient, desk: Desk) -> None:
    from tests.factories import make_desk

    other = await make_desk(app)
    created = await open_session(client, desk)
    for action in ("start", "end", "cancel"):
        response = await client.post(
            f"/api/v1/sessions/{created['id']}/{action}", headers=other.headers
        )
        assert response.status_code == 403, action
    assert (
        await client.get(f"/api/v1/sessions/{created['id']}", headers=other.headers)
    ).status_code == 403
