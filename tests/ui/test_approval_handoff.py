"""The requesting technician gets the consent code after a second approval (Chromium, SQLite).

A request that waits for a second person has no code yet; the approver approves on their
page, and the technician's open session page (it refreshes itself) then shows the code and
link to give the end user, who enters the code and approves. Nobody else's page shows it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from broker.sessions import service as sessions
from tests.browser_login import WAIT_MS, Logins
from tests.factories import Desk, bearer, make_device, make_group, make_token, make_user


async def test_the_technician_sees_the_code_after_the_second_approval(
    app: Any,
    db_url: str,
    client: httpx.AsyncClient,
    logins: Logins,
) -> None:
    if db_url.startswith("postgresql"):
        pytest.skip("a browser journey: checked on SQLite")
    tech, tech_pw = await make_user(app, "technician", username="tina")
    colleague, colleague_pw = await make_user(app, "technician", username="carl")
    group = await make_group(app, [tech, colleague], approval_required=True)
    device = await make_device(app, group, name="erika-pc")
    desk = Desk(tech, await make_token(app, tech), group, device)

    # The technician asks through the form.
    mine = await logins.open(tech.username, tech_pw, "/ui/new")
    await mine.get_by_label("Ticket system").fill("helpdesk")
    await mine.get_by_label("Ticket number").fill("HD-77")
    await mine.get_by_label("Device", exact=True).select_option(device.id)
    await mine.get_by_label("Reason").fill("VPN client keeps dropping")
    await mine.get_by_label("See the screen").check()
    await mine.get_by_role("button", name="Request consent").click()
    await mine.wait_for_url(lambda url: "/ui/sessions/" in url)
    sid = mine.url.rsplit("/", 1)[1]
    await mine.locator("#awaiting-approval").wait_for()
    assert await mine.locator("#consent-code").count() == 0

    # The colleague approves on the approvals page.
    theirs = await logins.open(colleague.username, colleague_pw, "/ui/approvals")
    await theirs.get_by_role("button", name="Approve").click()
    await theirs.get_by_role("heading", name="Approved: the end user is asked now").wait_for()
    shown_to_approver = (await theirs.locator("#consent-code").text_content() or "").strip()

    # The technician's page, left open, now shows the same code and the link.
    code = mine.locator("#consent-code")
    await code.wait_for(timeout=WAIT_MS)
    assert (await code.text_content() or "").strip() == shown_to_approver
    link = (await mine.locator("#consent-link").text_content() or "").strip()
    assert "/consent/" in link
    # The approver's session page does not show the technician's code.
    other = await logins.open(colleague.username, colleague_pw, f"/ui/sessions/{sid}")
    assert await other.locator("#consent-code").count() == 0

    # The end user enters the code the technician reads and approves.
    end_user = await (await logins.anonymous()).new_page()
    await end_user.goto(logins.base_url + "/consent")
    await end_user.get_by_label("Support code").fill(shown_to_approver)
    await end_user.get_by_role("button", name="Continue").click()
    await end_user.get_by_label("Your name").fill("Erika")
    await end_user.get_by_role("button", name="Approve").click()
    await mine.get_by_text("The user approved").wait_for()
    async with app.state.sessionmaker() as db:
        record, _ = await sessions.load(db, sid)
        assert record.session.state == "approved"
    # Once decided the kept code is gone: nothing to read any more.
    listed = await client.get(f"/api/v1/sessions/{sid}", headers=bearer(desk.token))
    assert listed.json()["state"] == "approved"
    async with app.state.sessionmaker() as db:
        from broker.consent import service as consent

        assert await consent.handoff(db, sid) is None
