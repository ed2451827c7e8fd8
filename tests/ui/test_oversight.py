"""The supervisor's pages, logged in through the form: the live queue of their groups with
watch links, stopping a session with the reason the form asks for, and the reports narrowed
to their groups, which credit the owner and count expert help apart."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx

from tests.factories import (
    Desk,
    consent_token,
    make_device,
    make_group,
    make_token,
    make_user,
    open_session,
)
from tests.ui.browsers import browser


async def _desk(app: Any, group: Any, tech: Any, **device: Any) -> Desk:
    return Desk(tech, await make_token(app, tech), group, await make_device(app, group, **device))


def _ticket(external_id: str) -> dict[str, str]:
    return {"system": "helpdesk", "external_id": external_id, "subject": "Mail client"}


async def test_live_queue_page_watch_links_and_stop_with_reason(
    app: Any, client: httpx.AsyncClient
) -> None:
    tech, _ = await make_user(app, "technician", username="tina")
    far_tech, _ = await make_user(app, "technician", username="fritz")
    supervisor, _ = await make_user(app, "supervisor", username="sabine")
    group = await make_group(app, [tech, supervisor])
    far_group = await make_group(app, [far_tech])
    desk = await _desk(app, group, tech, provider="agent", name="erika-pc")
    far = await _desk(app, far_group, far_tech, name="far-pc")
    created = await open_session(
        client, desk, ticket=_ticket("HD-10"), capabilities=["shell", "view"]
    )
    decided = await client.post(
        f"/consent/{consent_token(created)}/decide", data={"decision": "approve", "name": "Erika"}
    )
    assert decided.status_code == 303
    started = await client.post(f"/api/v1/sessions/{created['id']}/start", headers=desk.headers)
    assert started.status_code == 200, started.text
    waiting = await open_session(client, desk, ticket=_ticket("HD-11"))
    elsewhere = await open_session(client, far, ticket=_ticket("HD-12"))

    sup = await browser(app, supervisor)
    home = await sup.get("/ui", follow_redirects=True)
    assert home.url.path == "/ui/oversight", home.url
    page = home.text
    assert "Live queue" in page
    assert "HD-10" in page
    assert "HD-11" in page
    assert "HD-12" not in page
    assert "far-pc" not in page
    assert "Waiting 1 · running 1" in page
    assert f'href="/terminal/{created["id"]}?mode=watch"' in page
    assert f'href="/desktop/{created["id"]}?mode=watch"' in page
    assert f'href="/terminal/{waiting["id"]}?mode=watch"' not in page  # nothing runs yet
    rows = await sup.get("/ui/oversight/rows")
    assert rows.status_code == 200
    assert 'id="oversight-queue"' in rows.text

    stop = f"/ui/oversight/{created['id']}/stop"
    assert (await sup.post(stop, {"reason": "x"}, csrf=False)).status_code == 403
    no_reason = await sup.post(stop, {"reason": ""})
    assert no_reason.status_code == 422
    assert "reason" in no_reason.text
    ended = await sup.post(stop, {"reason": "wrong device for this ticket"})
    assert ended.status_code == 303, ended.text
    revoked = await sup.post(f"/ui/oversight/{waiting['id']}/stop", {"reason": "duplicate"})
    assert revoked.status_code == 303, revoked.text
    far_stop = await sup.post(f"/ui/oversight/{elsewhere['id']}/stop", {"reason": "mine?"})
    assert far_stop.status_code == 403

    admin, _ = await make_user(app, "admin")
    admin_token = await make_token(app, admin)
    states = {}
    for sid in (created["id"], waiting["id"], elsewhere["id"]):
        got = await client.get(
            f"/api/v1/sessions/{sid}", headers={"Authorization": f"Bearer {admin_token}"}
        )
        states[sid] = (got.json()["state"], got.json()["end_reason"])
    assert states[created["id"]] == ("ended", "wrong device for this ticket")
    assert states[waiting["id"]] == ("revoked", "revoked by a supervisor: duplicate")
    assert states[elsewhere["id"]][0] == "awaiting_consent"
    assert "HD-10" not in (await sup.get("/ui/oversight")).text

    technician = await browser(app, tech)
    assert (await technician.get("/ui/oversight")).status_code == 403
    for c in (sup, technician):
        await c.client.aclose()


async def _csv(page: Any, name: str) -> list[list[str]]:
    response = await page.get(f"/ui/reports/{name}.csv")
    assert response.status_code == 200, response.text
    return list(csv.reader(io.StringIO(response.text)))


async def test_supervisor_reports_cover_their_groups_and_credit_the_owner(
    app: Any, client: httpx.AsyncClient
) -> None:
    owner, _ = await make_user(app, "technician", username="olga")
    expert, _ = await make_user(app, "technician", username="ernst")
    far_tech, _ = await make_user(app, "technician", username="fritz")
    supervisor, _ = await make_user(app, "supervisor", username="sabine")
    group = await make_group(app, [owner, expert, supervisor])
    far_group = await make_group(app, [far_tech])
    desk = await _desk(app, group, owner)
    far = await _desk(app, far_group, far_tech)
    first = await open_session(client, desk, ticket=_ticket("HD-20"))
    await open_session(client, desk, ticket=_ticket("HD-21"))
    await open_session(client, far, ticket=_ticket("HD-22"))

    # The owner asks the expert for help on the first session, from the session page.
    owner_page = await browser(app, owner)
    invited = await owner_page.post(f"/ui/sessions/{first['id']}/invite", {"expert_id": expert.id})
    assert invited.status_code == 303, invited.text

    sup = await browser(app, supervisor)
    assert await _csv(sup, "technicians") == [
        ["technician", "sessions", "ended", "with_expert", "expert_assists"],
        [owner.display_name, "2", "0", "1", "0"],  # both sessions stay the owner's
        [expert.display_name, "0", "0", "0", "1"],  # help, not a session of the expert's
    ]
    outcomes = {row[0]: row[1] for row in (await _csv(sup, "outcomes"))[1:]}
    assert outcomes["awaiting_consent"] == "2"  # the other group's request is not counted
    page = await sup.get("/ui/reports")
    assert page.status_code == 200
    assert far_tech.display_name not in page.text

    # The session search shows the groups' sessions, and only their technicians and devices.
    search = await sup.get("/ui/audit/sessions")
    assert search.status_code == 200
    assert "HD-20" in search.text
    assert "HD-22" not in search.text
    assert far_tech.display_name not in search.text
    assert far.device.name not in search.text
    assert "Erase ticket content" not in search.text
    # ... but not by audit event (the log's headers are audit content): no select, and a
    # hand-made filter is refused
    assert 'name="event"' not in search.text
    by_event = await sup.get("/ui/audit/sessions?event=session.requested")
    assert by_event.status_code == 403
    assert "HD-20" not in by_event.text

    # An auditor's reports cover every group.
    auditor, _ = await make_user(app, "auditor")
    audit = await browser(app, auditor)
    names = {row[0] for row in (await _csv(audit, "technicians"))[1:]}
    assert far_tech.display_name in names
    for c in (owner_page, sup, audit):
        await c.client.aclose()
