"""A session on a ticket of a connected help desk, through HTTP, on SQLite and PostgreSQL:
the ticket gates the request (open, known, reachable), every step of the session is written
back to the ticket through the outbox, and the ticket closing ends its sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from audit import schema as audit_schema
from broker.connectors import registry as registry_mod
from broker.connectors.models import OutboxMessage
from broker.connectors.outbox import deliver_due
from broker.db.base import utcnow
from broker.evidence.service import audit_log_of
from broker.sessions.models import RemoteSession
from broker.tickets.repository import TicketRepository
from tests.connectors.conftest import SYSTEM
from tests.connectors.fakes.webhook import FakeReceiver
from tests.connectors.harness import harness
from tests.connectors.test_webhooks import URL, signed
from tests.factories import (
    Desk,
    audit_events,
    consent_token,
    request_session,
    update_session_row,
)

STORY = [
    "session.requested",
    "consent.decided",
    "session.started",
    "session.ended",
    "evidence.sealed",
]


def on(external_id: str, system: str = SYSTEM) -> dict[str, Any]:
    return {"ticket": {"system": system, "external_id": external_id}}


async def decide(client: httpx.AsyncClient, created: dict[str, Any], decision: str) -> None:
    response = await client.post(
        f"/api/v1/consent/{consent_token(created)}/decision",
        json={"decision": decision, "name": "Erika"},
    )
    assert response.status_code == 200, response.text


async def act(client: httpx.AsyncClient, desk: Desk, sid: str, what: str, **body: Any) -> Any:
    response = await client.post(
        f"/api/v1/sessions/{sid}/{what}", json=body or None, headers=desk.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def created_on(client: httpx.AsyncClient, desk: Desk, external_id: str) -> dict[str, Any]:
    response = await request_session(client, desk, **on(external_id))
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def queued(app: Any) -> int:
    async with app.state.sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(OutboxMessage)) or 0)


async def test_every_step_is_written_to_the_ticket(
    app: Any, client: httpx.AsyncClient, desk: Desk, receiver: FakeReceiver
) -> None:
    created = await created_on(client, desk, "4711")
    sid = created["id"]
    await decide(client, created, "approve")
    await act(client, desk, sid, "start")
    await act(client, desk, sid, "end", reason="printer fixed")
    async with app.state.sessionmaker() as db:
        # The digest cites the checkpoint signed with the session's end: the end's own
        # transaction queues it (the provider's withdrawal is sealed after that commit).
        records = await audit_log_of(db).read_stream(await db.connection(), f"{SYSTEM}:4711")
        ended_at = next(r.position for r in records if r.event_type == "session.ended")
        ticket = await TicketRepository(db).by_ref(SYSTEM, "4711")
    assert await queued(app) == len(STORY)
    assert receiver.received == []  # queued in the transactions, sent by the worker

    assert await deliver_due(app.state.sessionmaker) == len(STORY)
    assert [e["type"] for e in receiver.received] == STORY
    assert {e["ticket"]["id"] for e in receiver.received} == {"4711"}
    by_type = {e["type"]: e for e in receiver.received}
    requested = by_type["session.requested"]
    assert desk.tech.display_name in requested["text"]
    assert "Printer driver keeps crashing after the update" in requested["text"]
    assert "control, view" in requested["text"]
    assert requested["data"]["session_id"] == sid
    assert requested["data"]["capabilities"] == ["control", "view"]
    decided = by_type["consent.decided"]
    assert "approved by Erika" in decided["text"]
    assert decided["data"]["decision"] == "approve"
    assert "Remote session started" in by_type["session.started"]["text"]
    ended = by_type["session.ended"]
    assert "Ended because: printer fixed" in ended["text"]
    assert "Duration:" in ended["text"]
    assert ended["data"]["outcome"] == "ended"
    assert ended["data"]["duration_seconds"] is not None
    sealed = by_type["evidence.sealed"]
    # Checkpoints come on a cadence: the digest, taken at delivery, is the first signed
    # checkpoint that covers the session's end (signed then if none did yet).
    async with app.state.sessionmaker() as db:
        covering = await db.scalar(
            select(func.min(audit_schema.checkpoints.c.size)).where(
                audit_schema.checkpoints.c.size > ended_at
            )
        )
    assert sealed["data"]["tree_size"] == covering
    assert records[-1].event_type == "provider.ended"
    assert sealed["data"]["ticket"] == f"{SYSTEM}:4711"
    assert f"supportbroker audit export {SYSTEM}:4711 --out" in sealed["text"]
    assert sealed["data"]["export_command"] in sealed["text"]
    assert sealed["data"]["audit_page"].endswith(f"/ui/audit/tickets/{SYSTEM}/4711")
    # The help desk's own view of the ticket was taken over on request.
    assert ticket is not None
    assert ticket.subject == "Printer on fire"
    assert ticket.assignee == "tom"
    assert ticket.url == "https://helpdesk.example/tickets/4711"


async def test_denied_and_expired_requests_are_written_too(
    app: Any, client: httpx.AsyncClient, desk: Desk, receiver: FakeReceiver
) -> None:
    denied = await created_on(client, desk, "4711")
    await decide(client, denied, "deny")
    waiting = await created_on(client, desk, "4711")
    await update_session_row(app, waiting["id"], deadline_at=utcnow() - timedelta(seconds=1))
    got = await client.get(f"/api/v1/sessions/{waiting['id']}", headers=desk.headers)
    assert got.json()["state"] == "expired"

    await deliver_due(app.state.sessionmaker)
    story = [(e["data"].get("session_id"), e["type"]) for e in receiver.received]
    assert story == [
        (denied["id"], "session.requested"),
        (denied["id"], "consent.decided"),
        (denied["id"], "evidence.sealed"),
        (waiting["id"], "session.requested"),
        (waiting["id"], "session.ended"),
        (waiting["id"], "evidence.sealed"),
    ]
    no = next(e for e in receiver.received if e["type"] == "consent.decided")
    assert "denied by Erika" in no["text"]
    assert no["data"]["decision"] == "deny"
    expired = next(e for e in receiver.received if e["type"] == "session.ended")
    assert expired["data"]["outcome"] == "expired"
    assert "Duration: not started" in expired["text"]
    assert "consent was not given in time" in expired["text"]


async def test_closed_ticket_is_refused_and_audited(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    response = await request_session(client, desk, **on("4712"))
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "policy_denied"
    assert "closed" in response.json()["detail"]
    events = await audit_events(app, f"{SYSTEM}:4712")
    assert [t for t, _ in events] == ["policy.denied"]
    assert events[0][1]["data"]["rule"] == "ticket_closed"
    async with app.state.sessionmaker() as db:
        assert await db.scalar(select(func.count()).select_from(RemoteSession)) == 0
    assert await queued(app) == 0


async def test_unknown_or_unreachable_ticket_is_refused(
    app: Any, client: httpx.AsyncClient, desk: Desk, receiver: FakeReceiver
) -> None:
    unknown = await request_session(client, desk, **on("999"))
    assert unknown.status_code == 404, unknown.text
    assert "999" in unknown.json()["detail"]
    receiver.down = True
    unreachable = await request_session(client, desk, **on("4711"))
    assert unreachable.status_code == 502, unreachable.text
    assert unreachable.json()["error"] == "connector_error"
    rules = [p["data"]["rule"] for _, p in await audit_events(app, f"{SYSTEM}:999")]
    assert rules == ["ticket_unknown"]
    rules = [p["data"]["rule"] for _, p in await audit_events(app, f"{SYSTEM}:4711")]
    assert rules == ["ticket_unverified"]
    async with app.state.sessionmaker() as db:
        assert await db.scalar(select(func.count()).select_from(RemoteSession)) == 0


async def test_a_webhook_closing_the_ticket_ends_its_sessions(
    app: Any, client: httpx.AsyncClient, desk: Desk, receiver: FakeReceiver
) -> None:
    running = await created_on(client, desk, "4711")
    await decide(client, running, "approve")
    await act(client, desk, running["id"], "start")
    waiting = await created_on(client, desk, "4711")

    receiver.tickets["4711"]["state"] = "closed"  # closed in the help desk, which tells us
    body, headers = signed("ticket.closed", "4711", delivery="close-1")
    response = await client.post(URL, content=body, headers=headers)
    assert response.status_code == 200, response.text

    for sid, state in ((running["id"], "ended"), (waiting["id"], "revoked")):
        got = await client.get(f"/api/v1/sessions/{sid}", headers=desk.headers)
        assert got.json()["state"] == state
        assert got.json()["end_reason"] == "ticket closed"
    events = await audit_events(app, f"{SYSTEM}:4711")
    ended = next(p for t, p in events if t == "session.ended")
    assert ended["actor"] == {"kind": "ticket_system", "name": SYSTEM}
    assert ended["data"]["end_reason"] == "ticket closed"
    assert "provider.ended" in [t for t, _ in events]  # access withdrawn with the end

    await deliver_due(app.state.sessionmaker)
    ends = [e for e in receiver.received if e["type"] == "session.ended"]
    assert {e["data"]["session_id"]: e["data"]["outcome"] for e in ends} == {
        running["id"]: "ended",
        waiting["id"]: "revoked",
    }
    assert all("Ended because: ticket closed" in e["text"] for e in ends)
    # And the closed ticket takes no new session.
    again = await request_session(client, desk, **on("4711"))
    assert again.status_code == 403, again.text


async def test_a_standalone_ticket_works_and_sends_nothing(
    app: Any, client: httpx.AsyncClient, desk: Desk, receiver: FakeReceiver
) -> None:
    response = await request_session(
        client, desk, ticket={"system": "paper", "external_id": "P-1", "subject": "typed"}
    )
    assert response.status_code == 201, response.text
    await decide(client, response.json(), "approve")
    await act(client, desk, response.json()["id"], "cancel")
    async with app.state.sessionmaker() as db:
        systems = (await db.scalars(select(OutboxMessage.system))).all()
        ticket = await TicketRepository(db).by_ref("paper", "P-1")
    assert "paper" not in systems
    assert ticket is not None
    assert ticket.subject == "typed"


@pytest.fixture
async def desk_system(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A help desk of ``kind`` (fake API) installed as the only configured system."""
    h = harness(request.param)
    registry = h.registry()
    registry_mod.install(registry)
    yield h
    registry_mod.install(None)
    await registry.aclose()


@pytest.mark.parametrize("desk_system", ["zammad", "glpi", "jira", "freshdesk"], indirect=True)
async def test_each_help_desk_gets_internal_notes(
    app: Any, client: httpx.AsyncClient, desk: Desk, desk_system: Any
) -> None:
    h = desk_system
    closed = await request_session(client, desk, **on(h.closed_id, h.kind))
    assert closed.status_code == 403, closed.text
    response = await request_session(client, desk, **on(h.open_id, h.kind))
    assert response.status_code == 201, response.text
    created = response.json()
    await decide(client, created, "approve")
    await act(client, desk, created["id"], "start")
    await act(client, desk, created["id"], "end", reason="toner replaced")

    assert await deliver_due(app.state.sessionmaker) == len(STORY)
    notes = [n for n in h.fake.notes if n["ticket"] == h.open_id]
    assert len(notes) == len(STORY)
    assert all(n["internal"] for n in notes)
    firsts = ["requested", "approved by", "started", "ended", "Audit evidence sealed"]
    for note, words in zip(notes, firsts, strict=True):
        assert words in note["text"], note["text"]
        assert "[supportbroker]" in note["text"]
    assert "toner replaced" in notes[3]["text"]
