"""The technician's console through HTTP: the ticket deep link, the device picker limited to
the technician's groups, the ticket lookup, the request, the waiting screen with the code,
the live status after the end user decides (with their answers), ending the session."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import make_desk, make_device, make_group, make_user
from tests.ui.browsers import browser, hidden


async def test_deep_link_request_wait_approve_end(app: Any, client: httpx.AsyncClient) -> None:
    desk = await make_desk(app, questions=[{"id": "os", "label": "Which operating system?"}])
    stranger, _ = await make_user(app, "technician")
    foreign = await make_device(app, await make_group(app, [stranger]), name="not-mine-pc")
    tech = await browser(app, desk.tech)

    link = await tech.get("/t/helpdesk/HD-4711/connect")
    assert link.headers["location"] == "/sessions/new?system=helpdesk&ticket=HD-4711"
    landed = await tech.get(link.headers["location"])
    assert landed.headers["location"] == "/ui/new?system=helpdesk&ticket=HD-4711"
    form = await tech.get(landed.headers["location"])
    assert form.status_code == 200
    assert 'value="HD-4711"' in form.text
    assert desk.device.name in form.text
    assert foreign.name not in form.text  # only devices of my groups
    assert "taken as typed" in form.text  # standalone system: the subject is asked for

    lookup = await tech.get("/ui/new/ticket", params={"system": "helpdesk", "ticket": "HD-4711"})
    assert "helpdesk:HD-4711" in lookup.text

    body = {
        "system": "helpdesk",
        "ticket": "HD-4711",
        "subject": "Printer offline",
        "device_id": desk.device.id,
        "reason": "Printer driver keeps crashing",
        "capabilities": ["view", "control"],
        "duration_minutes": "30",
    }
    short = await tech.post("/ui/sessions", {**body, "reason": "x"})
    assert short.status_code == 403
    assert "reason must be at least" in short.text
    outside = await tech.post("/ui/sessions", {**body, "device_id": foreign.id})
    assert outside.status_code == 403

    created = await tech.post("/ui/sessions", body)
    assert created.status_code == 303, created.text
    session_url = created.headers["location"]
    waiting = await tech.get(session_url)
    assert "Waiting for consent" in waiting.text
    code = waiting.text.split('id="consent-code">')[1].split("<")[0]
    assert len(code) == 11
    assert 'hx-trigger="every 2s"' in waiting.text

    # the end user: code → request page → approve with an answer
    found = await client.post("/consent", data={"code": code})
    assert found.status_code == 303
    token_path = found.headers["location"]
    decided = await client.post(
        token_path + "/decide",
        data={"decision": "approve", "name": "Erika", "answer_os": "Windows 11"},
    )
    assert decided.status_code == 303

    status = await tech.get(session_url + "/status")
    assert 'data-state="approved"' in status.text
    assert "Which operating system?" in status.text
    assert "Windows 11" in status.text
    assert "consent-code" not in status.text  # the code is gone once decided
    listing = await tech.get("/ui/console/sessions")
    assert "HD-4711" in listing.text
    assert 'data-state="approved"' in listing.text

    csrf = hidden(status.text, "csrf_token")
    started = await tech.post(session_url + "/start", {"csrf_token": csrf}, csrf=False)
    assert started.status_code == 303
    ended = await tech.post(session_url + "/end")
    assert ended.status_code == 303
    final = await tech.get(session_url + "/status")
    assert 'data-state="ended"' in final.text
    assert "hx-trigger" not in final.text  # polling stops once nothing can change
    again = await tech.post(session_url + "/end")
    assert again.status_code == 409
    await tech.client.aclose()


async def test_cancel_and_admin_view(app: Any) -> None:
    desk = await make_desk(app)
    admin, _ = await make_user(app, "admin")
    tech = await browser(app, desk.tech)
    created = await tech.post(
        "/ui/sessions",
        {
            "system": "helpdesk",
            "ticket": "HD-7",
            "device_id": desk.device.id,
            "reason": "Mail client will not start",
            "capabilities": "view",
            "duration_minutes": "15",
        },
    )
    url = created.headers["location"]
    seen = await (await browser(app, admin)).get(url)
    assert seen.status_code == 200
    assert "consent-code" not in seen.text  # the code cookie belongs to the technician
    cancelled = await tech.post(url + "/cancel")
    assert cancelled.status_code == 303
    assert 'data-state="revoked"' in (await tech.get(url)).text
    await tech.client.aclose()
