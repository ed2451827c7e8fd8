"""Inviting an expert from the technician's session page: who can be invited, CSRF, the
audit event, the session in the expert's console, the expert's page with "Join the
terminal", and what the expert still may not do."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import Desk as DeskRecord
from tests.factories import (
    audit_events,
    consent_token,
    make_device,
    make_group,
    make_token,
    make_user,
    open_session,
)
from tests.ui.browsers import browser


async def _running_agent_session(app: Any, client: httpx.AsyncClient) -> dict[str, Any]:
    tech, _ = await make_user(app, "technician", username="tina")
    expert, _ = await make_user(app, "technician", username="ernst")
    outsider, _ = await make_user(app, "technician", username="otto")
    group = await make_group(app, [tech, expert])
    await make_group(app, [outsider])
    device = await make_device(app, group, provider="agent", name="erika-pc")
    desk = DeskRecord(tech, await make_token(app, tech), group, device)
    created = await open_session(client, desk, capabilities=["files", "shell"])
    token = consent_token(created)
    decided = await client.post(
        f"/consent/{token}/decide", data={"decision": "approve", "name": "Erika"}
    )
    assert decided.status_code == 303
    return {"sid": created["id"], "tech": tech, "expert": expert, "outsider": outsider}


async def test_invite_an_expert_who_then_sees_and_joins_the_session(
    app: Any, client: httpx.AsyncClient
) -> None:
    found = await _running_agent_session(app, client)
    sid, url = found["sid"], f"/ui/sessions/{found['sid']}"
    tech = await browser(app, found["tech"])
    expert = await browser(app, found["expert"])
    outsider = await browser(app, found["outsider"])

    page = await tech.get(url)
    assert "Invite an expert" in page.text
    assert found["expert"].display_name in page.text
    assert found["outsider"].display_name not in page.text  # not of the device's group
    assert (await expert.get(url)).status_code == 403  # not invited yet

    no_csrf = await tech.post(url + "/invite", {"expert_id": found["expert"].id}, csrf=False)
    assert no_csrf.status_code == 403
    foreign = await tech.post(url + "/invite", {"expert_id": found["outsider"].id})
    assert foreign.status_code == 404
    invited = await tech.post(url + "/invite", {"expert_id": found["expert"].id})
    assert invited.status_code == 303, invited.text
    assert 'id="invited-experts"' in (await tech.get(url)).text
    again = await tech.post(url + "/invite", {"expert_id": found["expert"].id})
    assert again.status_code == 409

    events = await audit_events(app, "helpdesk:HD-4711")
    invites = [p for t, p in events if t == "session.expert_invited"]
    assert len(invites) == 1
    assert invites[0]["data"]["expert_id"] == found["expert"].id
    assert invites[0]["actor"]["id"] == found["tech"].id

    console = await expert.get("/ui/console/sessions")
    assert "Invited to help" in console.text
    assert f"/ui/sessions/{sid}" in console.text
    waiting = await expert.get(url)
    assert waiting.status_code == 200
    assert "invited you to help" in waiting.text
    assert "once tina" in waiting.text or "has connected" in waiting.text
    assert "Join the terminal" not in waiting.text  # approved, not yet running

    started = await tech.post(url + "/start")
    assert started.status_code == 303
    running = await expert.get(url + "/status")
    assert f'href="/terminal/{sid}?mode=join"' in running.text
    assert "Open terminal" not in running.text  # control stays with the session's technician
    assert (await expert.get(f"/terminal/{sid}?mode=join")).status_code == 200

    # the expert may look and join, not steer the session or invite others
    assert (await expert.post(url + "/end")).status_code == 403
    assert (await expert.post(url + "/invite", {"expert_id": found["tech"].id})).status_code == 403
    assert (await outsider.get(url)).status_code == 403

    assert (await tech.post(url + "/end")).status_code == 303
    after = await expert.get("/ui/console/sessions")
    assert "Invited to help" not in after.text  # only open sessions are listed
    for b in (tech, expert, outsider):
        await b.client.aclose()


async def test_invite_refused_when_the_session_is_over(app: Any, client: httpx.AsyncClient) -> None:
    found = await _running_agent_session(app, client)
    url = f"/ui/sessions/{found['sid']}"
    tech = await browser(app, found["tech"])
    assert (await tech.post(url + "/cancel")).status_code == 303
    assert "Invite an expert" not in (await tech.get(url)).text
    late = await tech.post(url + "/invite", {"expert_id": found["expert"].id})
    assert late.status_code == 409
    await tech.client.aclose()
