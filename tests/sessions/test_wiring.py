"""``end_sessions_for_ticket``: what a ticket closing does to each of its sessions, on SQLite
and PostgreSQL (the webhook path through HTTP is in tests/connectors/test_session_flow.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from broker.db.base import utcnow
from broker.evidence.service import Actor
from broker.sessions.service import end_sessions_for_ticket
from broker.tickets.repository import TicketRepository
from tests.factories import (
    Desk,
    audit_events,
    consent_token,
    make_desk,
    open_session,
    update_session_row,
)

REF = "helpdesk:HD-4711"
DESK = Actor(kind="ticket_system", name="helpdesk")


async def state(client: httpx.AsyncClient, desk: Desk, sid: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/sessions/{sid}", headers=desk.headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_each_open_session_ends_the_way_its_state_allows(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    other_desk = await make_desk(app)
    waiting = await open_session(client, desk)
    running = await open_session(client, desk)
    await client.post(
        f"/api/v1/consent/{consent_token(running)}/decision",
        json={"decision": "approve", "name": "Erika"},
    )
    started = await client.post(f"/api/v1/sessions/{running['id']}/start", headers=desk.headers)
    assert started.status_code == 200, started.text
    ran_out = await open_session(client, other_desk)
    await update_session_row(app, ran_out["id"], deadline_at=utcnow() - timedelta(seconds=1))
    elsewhere = await open_session(
        client, other_desk, ticket={"system": "helpdesk", "external_id": "HD-1"}
    )

    async with app.state.sessionmaker() as db, db.begin():
        ticket = await TicketRepository(db).by_ref("helpdesk", "HD-4711")
        assert ticket is not None
        moved = await end_sessions_for_ticket(db, ticket, actor=DESK, why="ticket closed")
    assert sorted(moved) == sorted([waiting["id"], running["id"]])

    assert (await state(client, desk, waiting["id"]))["state"] == "revoked"
    ended = await state(client, desk, running["id"])
    assert ended["state"] == "ended"
    assert ended["end_reason"] == "ticket closed"
    # Its deadline had passed: it expired on its own, the ticket did not end it.
    assert (await state(client, other_desk, ran_out["id"]))["state"] == "expired"
    assert (await state(client, other_desk, elsewhere["id"]))["state"] == "awaiting_consent"

    events = await audit_events(app, REF)
    by_ticket = [p for t, p in events if t in ("session.revoked", "session.ended")]
    assert {p["data"]["session_id"] for p in by_ticket} == {waiting["id"], running["id"]}
    assert all(p["actor"] == {"kind": "ticket_system", "name": "helpdesk"} for p in by_ticket)

    async with app.state.sessionmaker() as db, db.begin():
        ticket = await TicketRepository(db).by_ref("helpdesk", "HD-4711")
        assert ticket is not None
        assert await end_sessions_for_ticket(db, ticket, actor=DESK, why="again") == []
