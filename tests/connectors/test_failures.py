"""A ticket system that fails never costs the broker its audit trail: with the help desk
down for a whole session every step is still audited (in the transaction of the change) and
every comment waits in the outbox with its error, to be delivered in order once the desk is
back; a refused webhook is itself audited. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from broker.connectors.models import OutboxMessage
from broker.connectors.outbox import deliver_due
from broker.db.base import utcnow
from broker.evidence.service import SYSTEM_STREAM
from tests.connectors.conftest import SYSTEM
from tests.connectors.fakes.webhook import FakeReceiver
from tests.connectors.test_session_flow import STORY, act, created_on, decide
from tests.connectors.test_webhooks import URL, signed
from tests.factories import Desk, audit_events

SESSION_EVENTS = [
    "session.requested",
    "session.awaiting_consent",
    "session.approved",
    "session.active",
    "session.ended",
]


async def test_desk_down_for_a_whole_session_loses_nothing(
    app: Any, client: httpx.AsyncClient, desk: Desk, receiver: FakeReceiver
) -> None:
    created = await created_on(client, desk, "4711")  # the lookup needs the desk once
    receiver.down = True
    await decide(client, created, "approve")
    await act(client, desk, created["id"], "start")
    await act(client, desk, created["id"], "end", reason="printer fixed")

    assert await deliver_due(app.state.sessionmaker) == 0
    events = [t for t, _ in await audit_events(app, f"{SYSTEM}:4711")]
    session_events = [t for t in events if t.startswith("session.")]
    for expected in SESSION_EVENTS:
        assert expected in session_events, session_events
    async with app.state.sessionmaker() as db:
        rows = list((await db.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all())
    assert [r.event_type for r in rows] == STORY
    assert all(r.delivered_at is None for r in rows)
    assert rows[0].attempts == 1
    assert rows[0].last_error is not None
    assert "ConnectError" in rows[0].last_error
    assert all(r.attempts == 0 for r in rows[1:])  # blocked behind the head: order kept

    receiver.down = False
    async with app.state.sessionmaker() as db, db.begin():
        await db.execute(
            update(OutboxMessage).values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
    assert await deliver_due(app.state.sessionmaker) == len(STORY)
    assert [e["type"] for e in receiver.received] == STORY
    assert all(e["data"].get("session_id") == created["id"] for e in receiver.received)


async def test_a_refused_webhook_is_audited_and_changes_nothing(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    await created_on(client, desk, "4711")
    body, headers = signed("ticket.closed", "4711", secret="someone-elses-secret-000")
    response = await client.post(URL, content=body, headers=headers)
    assert response.status_code == 401
    rejected = [
        p for t, p in await audit_events(app, SYSTEM_STREAM) if t == "connector.webhook_rejected"
    ]
    assert len(rejected) == 1
    assert rejected[0]["actor"] == {"kind": "ticket_system", "name": SYSTEM}
    assert rejected[0]["data"] == {
        "system": SYSTEM,
        "status": 401,
        "why": "webhook signature does not match",
    }
    events = [t for t, _ in await audit_events(app, f"{SYSTEM}:4711")]
    assert "ticket.closed" not in events
    assert "session.revoked" not in events
