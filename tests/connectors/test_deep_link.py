"""The ticket UI's "start remote session" link for a connected help desk, followed as a
logged-in technician's browser would: ``/t/{system}/{id}/connect`` → ``/sessions/new`` →
the request form pre-filled with the system and ticket number and showing the ticket as the
help desk describes it (subject, state, requester), or that it is closed. On SQLite and
PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx

from broker.connectors.registry import ConnectorRegistry
from tests.connectors.conftest import SYSTEM
from tests.connectors.fakes.webhook import FakeReceiver
from tests.factories import Desk, make_device, make_group, make_token, make_user
from tests.ui.browsers import Browser, browser


async def follow(tech: Browser, path: str) -> httpx.Response:
    response = await tech.get(path)
    for _ in range(3):
        if response.status_code != 303:
            break
        response = await tech.get(response.headers["location"])
    return response


async def test_the_link_lands_on_the_prefilled_form(
    app: Any, desk: Desk, receiver: FakeReceiver
) -> None:
    tech = await browser(app, desk.tech)
    link = await tech.get(f"/t/{SYSTEM}/4711/connect")
    assert link.status_code == 303
    form = await follow(tech, link.headers["location"])
    assert form.status_code == 200, form.text
    assert str(form.url).endswith(f"/ui/new?system={SYSTEM}&ticket=4711")
    assert f'name="system" type="text" list="systems" required maxlength="50" value="{SYSTEM}"' in (
        form.text
    )
    assert 'value="4711"' in form.text
    assert '<span id="ticket-subject">Printer on fire</span>' in form.text
    assert "requested by Erika Mustermann" in form.text
    assert "taken as typed" not in form.text  # the help desk answered
    assert desk.device.name in form.text
    assert ("GET", "/tickets/4711") in receiver.calls


async def test_a_closed_ticket_says_so_on_the_form(app: Any, desk: Desk) -> None:
    tech = await browser(app, desk.tech)
    form = await follow(tech, f"/t/{SYSTEM}/4712/connect")
    assert form.status_code == 200
    assert "The ticket is closed; reopen it before asking for a session." in form.text


async def test_an_unknown_ticket_is_reported_not_a_crash(app: Any, desk: Desk) -> None:
    tech = await browser(app, desk.tech)
    form = await follow(tech, f"/t/{SYSTEM}/999/connect")
    assert form.status_code == 200
    assert 'role="alert">' in form.text
    assert "not found" in form.text


async def test_the_preview_knows_whose_ticket_it_is(
    app: Any, connector_registry: ConnectorRegistry
) -> None:
    """With ``require_assignee`` the preview checks the technician who is looking."""
    connector = connector_registry.get(SYSTEM)
    connector.config = connector.config.model_copy(update={"require_assignee": True})  # type: ignore[attr-defined]
    tom, _ = await make_user(app, "technician", username="tom")
    await make_device(app, await make_group(app, [tom]))
    await make_token(app, tom)
    form = await follow(await browser(app, tom), f"/t/{SYSTEM}/4711/connect")  # tom's ticket
    assert form.status_code == 200
    assert '<span id="ticket-subject">Printer on fire</span>' in form.text
    assert "not to you" not in form.text
    anna, _ = await make_user(app, "technician", username="anna")
    other = await follow(await browser(app, anna), f"/t/{SYSTEM}/4711/connect")
    assert "assigned to tom, not to you" in other.text
