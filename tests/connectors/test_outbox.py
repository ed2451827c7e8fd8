"""The outbox: written in the caller's transaction, delivered in order per ticket, retried
with back-off until the receiver answers 2xx, and still there after a broker restart."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from broker.app import create_app
from broker.config import Settings
from broker.connectors import service
from broker.connectors.models import OutboxMessage
from broker.connectors.outbox import backoff, deliver_due
from broker.db.base import utcnow
from broker.evidence.service import SYSTEM_ACTOR
from broker.tickets.service import ensure_ticket
from tests.connectors.conftest import SYSTEM, mount
from tests.connectors.fakes.webhook import FakeReceiver

EVENTS = ["session.requested", "consent.decided", "session.started", "session.ended"]


async def _queue(app: Any, external_id: str, events: list[str]) -> None:
    async with app.state.sessionmaker() as db, db.begin():
        ticket = await ensure_ticket(db, system=SYSTEM, external_id=external_id, actor=SYSTEM_ACTOR)
        for event in events:
            row = await service.enqueue_ticket_comment(
                db, ticket, event, f"text of {event}", {"n": event}
            )
            assert row is not None


async def _make_due(app: Any) -> None:
    """Let the back-off pass without waiting for it."""
    async with app.state.sessionmaker() as db, db.begin():
        await db.execute(
            update(OutboxMessage).values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff(n).total_seconds() for n in (1, 2, 3)] == [5, 10, 20]
    assert backoff(50).total_seconds() == 900


async def test_rollback_leaves_no_message(app: Any, receiver: FakeReceiver) -> None:
    async with app.state.sessionmaker() as db:
        async with db.begin():
            ticket = await ensure_ticket(db, system=SYSTEM, external_id="9", actor=SYSTEM_ACTOR)
        await db.begin()
        await service.enqueue_ticket_comment(db, ticket, "session.requested", "x")
        await db.rollback()
    assert await deliver_due(app.state.sessionmaker) == 0
    assert receiver.received == []


async def test_survives_restart_and_delivers_in_order_with_retries(
    app: Any, settings: Settings, receiver: FakeReceiver
) -> None:
    await _queue(app, "A", EVENTS)
    await _queue(app, "B", ["session.requested"])
    receiver.refuse_next = 1  # the first delivery (ticket A's first message) fails

    assert await deliver_due(app.state.sessionmaker) == 1  # B only: A is blocked by its head
    assert [(e["ticket"]["id"], e["type"]) for e in receiver.received] == [
        ("B", "session.requested")
    ]
    async with app.state.sessionmaker() as db:
        head = await db.scalar(
            select(OutboxMessage).where(OutboxMessage.external_id == "A").order_by(OutboxMessage.id)
        )
        assert head is not None
        assert head.attempts == 1
        assert head.delivered_at is None
        assert head.last_error
        assert "503" in head.last_error
        assert head.next_attempt_at > utcnow()  # backing off
    assert await deliver_due(app.state.sessionmaker) == 0  # not due yet

    # A new broker instance on the same database: nothing was lost.
    second = mount(create_app(settings))
    async with second.router.lifespan_context(second):
        await _make_due(second)
        assert await deliver_due(second.state.sessionmaker) == len(EVENTS)
    a_events = [e for e in receiver.received if e["ticket"]["id"] == "A"]
    assert [e["type"] for e in a_events] == EVENTS
    assert a_events[0]["text"] == "text of session.requested"
    assert a_events[0]["data"] == {"n": "session.requested"}
    async with app.state.sessionmaker() as db:
        rows = list((await db.scalars(select(OutboxMessage))).all())
        assert all(r.delivered_at is not None for r in rows)
        first = next(r for r in rows if r.external_id == "A" and r.event_type == EVENTS[0])
        assert first.attempts == 2
        assert a_events[0]["id"] == first.delivery_id  # retries keep the delivery id


async def test_concurrent_workers_deliver_each_message_once(
    app: Any, receiver: FakeReceiver
) -> None:
    for ticket in ("1", "2", "3"):
        await _queue(app, ticket, EVENTS[:2])
    counts = await asyncio.gather(*(deliver_due(app.state.sessionmaker) for _ in range(3)))
    assert sum(counts) == 6
    assert len(receiver.received) == 6
    assert len({e["id"] for e in receiver.received}) == 6
    for ticket in ("1", "2", "3"):
        assert [e["type"] for e in receiver.received if e["ticket"]["id"] == ticket] == EVENTS[:2]


async def test_standalone_ticket_queues_nothing(app: Any) -> None:
    async with app.state.sessionmaker() as db, db.begin():
        ticket = await ensure_ticket(db, system="typed", external_id="7", actor=SYSTEM_ACTOR)
        assert await service.enqueue_ticket_comment(db, ticket, "session.requested", "x") is None
