"""The slow poll that watches tickets with running sessions, and the link note in the ticket.

osTicket sends no webhooks: with its API Endpoints plugin the poll is how a closed ticket
ends its sessions. Any desk's poll sees a reassignment or a ticket gone; a desk that cannot
be asked changes nothing. The "start remote session" link is posted once per ticket, on the
first notification about it (``link_note = "created"``) or once it is assigned
(``"assigned"``), as an internal note through the outbox. SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from broker.connectors import registry as registry_mod
from broker.connectors.models import OutboxMessage, TicketWatch
from broker.connectors.outbox import deliver_due
from broker.flows.watch import watch_tickets
from tests.connectors.fakes.osticket import FakeOsTicket
from tests.connectors.fakes.zammad import FakeZammad
from tests.connectors.harness import Harness, harness
from tests.connectors.test_desk_notifications import notify, running, state_of
from tests.factories import Desk, audit_events


@pytest.fixture
async def hd(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    kind, extra = request.param
    h = harness(kind)
    h.entry = {**h.entry, **extra}
    registry = h.registry()
    registry_mod.install(registry)
    yield h
    registry_mod.install(None)
    await registry.aclose()


WATCHED = {"watch_interval_seconds": 600}


@pytest.mark.parametrize("hd", [("osticket-api", WATCHED)], indirect=True)
async def test_osticket_closing_a_ticket_ends_its_session_through_the_poll(
    app: Any, client: httpx.AsyncClient, desk: Desk, hd: Harness
) -> None:
    sid = await running(client, desk, hd)
    fake = hd.fake
    assert isinstance(fake, FakeOsTicket)
    assert await watch_tickets(app.state.sessionmaker) == 0  # looked at: still open
    fake.tickets["41"]["status"] = "Closed"
    assert await watch_tickets(app.state.sessionmaker) == 0  # not due again yet
    assert (await state_of(client, desk, sid))["state"] == "active"

    async with app.state.sessionmaker() as db, db.begin():
        row = (await db.scalars(select(TicketWatch))).one()
        row.checked_at = row.checked_at.replace(year=row.checked_at.year - 1)  # due again
    assert await watch_tickets(app.state.sessionmaker) == 1
    session = await state_of(client, desk, sid)
    assert (session["state"], session["end_reason"]) == ("ended", "ticket closed")
    events = await audit_events(app, "osticket-api:41")
    closed = next(p for t, p in events if t == "ticket.closed")
    assert closed["data"]["source"] == "poll"
    assert closed["actor"] == {"kind": "ticket_system", "name": "osticket-api"}


@pytest.mark.parametrize("hd", [("zammad", {"watch_interval_seconds": 30})], indirect=True)
async def test_the_poll_sees_a_reassignment_a_desk_down_and_a_ticket_gone(
    app: Any, client: httpx.AsyncClient, desk: Desk, hd: Harness
) -> None:
    fake = hd.fake
    assert isinstance(fake, FakeZammad)
    first = await running(client, desk, hd)
    fake.down = True  # cannot be asked: nothing changes, the failure is kept
    assert await watch_tickets(app.state.sessionmaker) == 0
    async with app.state.sessionmaker() as db:
        row = (await db.scalars(select(TicketWatch))).one()
        assert row.failures == 1
        assert "ConnectError" in (row.last_error or "")
        await db.rollback()
    assert (await state_of(client, desk, first))["state"] == "active"

    fake.down = False
    fake.tickets[11]["owner"] = "emma"
    await _due_now(app)
    assert await watch_tickets(app.state.sessionmaker) == 1
    session = await state_of(client, desk, first)
    assert (session["state"], session["end_reason"]) == ("ended", "ticket reassigned to emma")

    fake.tickets[11]["owner"] = desk.tech.username
    second = await running(client, desk, hd)
    del fake.tickets[11]  # deleted in the desk: 404 on the lookup
    await _due_now(app)
    assert await watch_tickets(app.state.sessionmaker) == 1
    session = await state_of(client, desk, second)
    assert session["end_reason"] == "ticket no longer exists in zammad"


async def _due_now(app: Any) -> None:
    async with app.state.sessionmaker() as db, db.begin():
        for row in (await db.scalars(select(TicketWatch))).all():
            row.checked_at = row.checked_at.replace(year=row.checked_at.year - 1)


@pytest.mark.parametrize(
    "hd", [("zammad", {"link_note": "created"}), ("zammad", {"link_note": "assigned"})],
    indirect=True,
)  # fmt: skip
async def test_the_link_note_is_posted_once(
    app: Any, client: httpx.AsyncClient, hd: Harness
) -> None:
    mode = hd.entry["link_note"]
    nobody = {"ticket__owner": {"login": "-", "id": 1}, "ticket__owner_id": 1}
    response, _ = await notify(client, "zammad", ticket__id=11, **nobody)
    assert response.status_code == 200, response.text
    assert await _links(app) == (1 if mode == "created" else 0)  # assigned: not yet
    response, _ = await notify(client, "zammad", ticket__id=11)  # the docs' example: Emma's
    assert response.status_code == 200, response.text
    response, _ = await notify(client, "zammad", ticket__id=11, ticket__title="Printer on fire!")
    assert response.status_code == 200, response.text
    async with app.state.sessionmaker() as db:
        rows = (await db.scalars(select(OutboxMessage))).all()
        assert [(r.event_type, r.marker) for r in rows] == [("ticket.link", "ticket/11/link")]
    assert await deliver_due(app.state.sessionmaker) == 1
    (note,) = hd.fake.notes
    assert note["internal"] is True
    assert "https://broker.example/t/zammad/11/connect" in note["text"]
    assert "[supportbroker-ref ticket/11/link]" in note["text"]


async def _links(app: Any) -> int:
    async with app.state.sessionmaker() as db:
        return len((await db.scalars(select(OutboxMessage.id))).all())
