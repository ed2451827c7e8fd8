"""Inbound webhooks end to end (good, bad, expired, replayed), the ticket gate, the deep
link and the admin overview, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from broker.connectors import service, signing
from broker.connectors.models import WebhookDelivery
from broker.db.base import utcnow
from broker.errors import Conflict, NotFound, PolicyDenied
from broker.evidence.service import SYSTEM_ACTOR
from broker.sessions.models import RemoteSession
from broker.tickets.repository import TicketRepository
from broker.tickets.service import ensure_ticket
from tests.connectors.conftest import SYSTEM
from tests.connectors.fakes.webhook import FakeReceiver
from tests.connectors.harness import HOOK_SECRET, KINDS, harness
from tests.factories import make_device, make_group, make_token, make_user

URL = f"/api/v1/connectors/{SYSTEM}/webhook"


def signed(
    event_type: str,
    ticket_id: str,
    *,
    delivery: str = "d-1",
    at: datetime | None = None,
    secret: str = HOOK_SECRET,
    **ticket: Any,
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"type": event_type, "ticket": {"id": ticket_id, **ticket}}).encode()
    headers = signing.signed_headers(
        secret, body, delivery_id=delivery, event_type=event_type, now=at
    )
    return body, headers


async def _ticket(app: Any, external_id: str = "4711") -> str:
    async with app.state.sessionmaker() as db, db.begin():
        ticket = await ensure_ticket(db, system=SYSTEM, external_id=external_id, actor=SYSTEM_ACTOR)
        return ticket.id


async def _session(app: Any, ticket_id: str, state: str) -> str:
    tech, _ = await make_user(app, "technician")
    group = await make_group(app, [tech])
    device = await make_device(app, group)
    now = utcnow()
    async with app.state.sessionmaker() as db, db.begin():
        row = RemoteSession(
            ticket_id=ticket_id,
            technician_id=tech.id,
            device_id=device.id,
            provider="null",
            reason="printer driver reinstall",
            capabilities=["view", "control"],
            duration_minutes=30,
            state=state,
            requested_at=now,
            deadline_at=now + timedelta(minutes=30),
        )
        db.add(row)
        await db.flush()
        return row.id


async def _state(app: Any, session_id: str) -> RemoteSession:
    async with app.state.sessionmaker() as db:
        row = await db.get(RemoteSession, session_id)
        assert row is not None
        return row


async def test_closed_webhook_closes_ticket_and_ends_its_sessions(
    app: Any, client: httpx.AsyncClient
) -> None:
    ticket_id = await _ticket(app)
    active = await _session(app, ticket_id, "active")
    waiting = await _session(app, ticket_id, "awaiting_consent")
    other = await _session(app, await _ticket(app, "other"), "active")

    body, headers = signed("ticket.closed", "4711")
    response = await client.post(URL, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["tickets"] == [ticket_id]

    async with app.state.sessionmaker() as db:
        ticket = await TicketRepository(db).get(ticket_id)
        assert ticket is not None
        assert ticket.state == "closed"
    ended = await _state(app, active)
    assert ended.state == "ended"
    assert ended.end_reason == "ticket closed"
    assert (await _state(app, waiting)).state == "revoked"
    assert (await _state(app, other)).state == "active"


async def test_reassigned_webhook_records_assignee_and_ends_sessions(
    app: Any, client: httpx.AsyncClient
) -> None:
    ticket_id = await _ticket(app)
    session_id = await _session(app, ticket_id, "approved")
    body, headers = signed("ticket.reassigned", "4711", assignee="someone.else")
    assert (await client.post(URL, content=body, headers=headers)).status_code == 200
    async with app.state.sessionmaker() as db:
        ticket = await TicketRepository(db).get(ticket_id)
        assert ticket is not None
        assert ticket.assignee == "someone.else"
        assert ticket.state == "open"
    assert (await _state(app, session_id)).state == "revoked"


async def test_bad_signature_is_refused(app: Any, client: httpx.AsyncClient) -> None:
    await _ticket(app)
    body, headers = signed("ticket.closed", "4711", secret="not-the-secret-" * 3)
    response = await client.post(URL, content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"
    body, headers = signed("ticket.updated", "4711")
    tampered = body.replace(b"updated", b"closed")
    assert (await client.post(URL, content=tampered, headers=headers)).status_code == 401
    async with app.state.sessionmaker() as db:
        ticket = await TicketRepository(db).by_ref(SYSTEM, "4711")
        assert ticket is not None
        assert ticket.state == "open"


async def test_expired_is_refused(app: Any, client: httpx.AsyncClient) -> None:
    await _ticket(app)
    body, headers = signed("ticket.closed", "4711", at=datetime.now(UTC) - timedelta(minutes=6))
    response = await client.post(URL, content=body, headers=headers)
    assert response.status_code == 401
    assert "replay window" in response.json()["detail"]


async def test_replayed_delivery_is_refused(app: Any, client: httpx.AsyncClient) -> None:
    await _ticket(app)
    body, headers = signed("ticket.updated", "4711", delivery="same-id")
    assert (await client.post(URL, content=body, headers=headers)).status_code == 200
    again = await client.post(URL, content=body, headers=headers)
    assert again.status_code == 409
    async with app.state.sessionmaker() as db:
        seen = list((await db.scalars(select(WebhookDelivery))).all())
        assert [(s.system, s.delivery_id) for s in seen] == [(SYSTEM, "same-id")]


async def test_unknown_system_and_ticket(app: Any, client: httpx.AsyncClient) -> None:
    body, headers = signed("ticket.closed", "nope")
    assert (await client.post(URL, content=body, headers=headers)).json()["tickets"] == []
    other = await client.post("/api/v1/connectors/unknown/webhook", content=body, headers=headers)
    assert other.status_code == 401


async def test_deep_link_redirects_to_the_prefilled_form(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/t/{SYSTEM}/HD%2F4711/connect")
    assert response.status_code == 303
    assert response.headers["location"] == f"/sessions/new?system={SYSTEM}&ticket=HD%2F4711"


async def test_admin_overview(app: Any, client: httpx.AsyncClient) -> None:
    admin, _ = await make_user(app, "admin")
    tech, _ = await make_user(app, "technician")
    listed = await client.get(
        "/api/v1/connectors", headers={"Authorization": f"Bearer {await make_token(app, admin)}"}
    )
    assert listed.status_code == 200, listed.text
    (entry,) = listed.json()["connectors"]
    assert entry["system"] == SYSTEM
    assert entry["kind"] == "webhook"
    assert entry["reachable"] is True
    refused = await client.get(
        "/api/v1/connectors", headers={"Authorization": f"Bearer {await make_token(app, tech)}"}
    )
    assert refused.status_code == 403


async def test_lookup_gate(app: Any, receiver: FakeReceiver) -> None:
    await _ticket(app)
    async with app.state.sessionmaker() as db, db.begin():
        info = await service.lookup_for_session(db, SYSTEM, "4711")
        assert info.subject == "Printer on fire"
        ticket = await TicketRepository(db).by_ref(SYSTEM, "4711")
        assert ticket is not None
        assert ticket.subject == "Printer on fire"  # refreshed from the system
        with pytest.raises(PolicyDenied, match="closed"):
            await service.lookup_for_session(db, SYSTEM, "4712")
        with pytest.raises(NotFound):
            await service.lookup_for_session(db, SYSTEM, "999")
        typed = await service.lookup_for_session(db, "standalone", "HD-1")
        assert typed.verified is False
        assert typed.is_open


async def test_lookup_gate_requires_assignee_when_configured(
    app: Any, connector_registry: Any
) -> None:
    connector = connector_registry.get(SYSTEM)
    connector.config = connector.config.model_copy(update={"require_assignee": True})
    async with app.state.sessionmaker() as db:
        with pytest.raises(PolicyDenied, match="assigned to tom"):
            await service.lookup_for_session(db, SYSTEM, "4711", technician=["anna"])
        info = await service.lookup_for_session(db, SYSTEM, "4711", technician=["Tom"])
        assert info.assignee == "tom"


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "null"])
async def test_every_kind_refuses_a_replayed_delivery(app: Any, kind: str) -> None:
    """Good, then the same delivery again (within the window): refused for every system;
    a fresh delivery id still passes. ``null`` takes no webhooks at all (contract test)."""
    registry = harness(kind).registry()
    body, headers = signed("ticket.updated", "1", delivery=f"replay-{kind}")
    try:
        async with app.state.sessionmaker() as db, db.begin():
            db.info["connectors"] = registry
            assert await service.handle_webhook(db, kind, headers, body) == []
        async with app.state.sessionmaker() as db, db.begin():
            db.info["connectors"] = registry
            with pytest.raises(Conflict, match="already received"):
                await service.handle_webhook(db, kind, headers, body)
            body, headers = signed("ticket.updated", "1", delivery=f"fresh-{kind}")
            assert await service.handle_webhook(db, kind, headers, body) == []
    finally:
        await registry.aclose()


async def test_an_update_saying_closed_or_naming_a_new_assignee_ends_sessions(
    app: Any, client: httpx.AsyncClient
) -> None:
    closed_id = await _ticket(app, "U-1")
    running = await _session(app, closed_id, "active")
    body, headers = signed("ticket.updated", "U-1", delivery="u-1", state="Closed")
    assert (await client.post(URL, content=body, headers=headers)).status_code == 200
    assert (await _state(app, running)).state == "ended"

    moved_id = await _ticket(app, "U-2")
    async with app.state.sessionmaker() as db, db.begin():
        ticket = await TicketRepository(db).get(moved_id)
        assert ticket is not None
        ticket.assignee = "tom"
    waiting = await _session(app, moved_id, "awaiting_consent")
    body, headers = signed("ticket.updated", "U-2", delivery="u-2", assignee="tom")
    assert (await client.post(URL, content=body, headers=headers)).status_code == 200
    assert (await _state(app, waiting)).state == "awaiting_consent"  # same assignee
    body, headers = signed("ticket.updated", "U-2", delivery="u-3", assignee="anna")
    assert (await client.post(URL, content=body, headers=headers)).status_code == 200
    revoked = await _state(app, waiting)
    assert revoked.state == "revoked"
    assert revoked.end_reason == "ticket reassigned to anna"
