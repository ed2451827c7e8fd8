"""The audit record of a ticket the broker first meets on a session request says who vouched
for it: ``connector:<system>`` when the help desk answered the lookup, ``standalone`` when
the number was taken as typed. On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx

from broker.connectors.base import TicketInfo
from tests.connectors.conftest import SYSTEM
from tests.factories import Desk, audit_events, request_session


async def _created(app: Any, ref: str) -> dict[str, Any]:
    (payload,) = [p for t, p in await audit_events(app, ref) if t == "ticket.created"]
    data: dict[str, Any] = payload["data"]
    return data


def test_source_names_the_system_that_answered() -> None:
    assert TicketInfo(system="zammad", external_id="1").source == "connector:zammad"
    assert TicketInfo(system="paper", external_id="1", verified=False).source == "standalone"


async def test_typed_ticket_is_recorded_as_standalone(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    ticket = {"system": "paper", "external_id": "P-1", "subject": "typed"}
    response = await request_session(client, desk, ticket=ticket)
    assert response.status_code == 201, response.text
    assert (await _created(app, "paper:P-1"))["source"] == "standalone"


async def test_verified_ticket_is_recorded_with_its_system(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    ticket = {"system": SYSTEM, "external_id": "4711"}
    response = await request_session(client, desk, ticket=ticket)
    assert response.status_code == 201, response.text
    created = await _created(app, f"{SYSTEM}:4711")
    assert created["source"] == f"connector:{SYSTEM}"
    assert created["subject"] == "Printer on fire"
