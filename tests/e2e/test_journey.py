"""One session end to end in a real headless Chromium, three people, three browser contexts.

The technician follows the ticket's deep link, signs in, asks for a session and reads the
code; the end user enters the code, answers the group's question and approves; the
technician's page turns to "Approved" by itself (htmx polling) and shows the answer; the
technician invites an expert, whose open console lists the session by itself; the end user's
status page turns to "In progress" by itself, and they end the session from it and rate it;
an auditor opens the ticket's timeline, sees it verified (green) and downloads the evidence
bundle, which verifies.
Screenshots of every step go to tests/artifacts/ (ignored by git).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from audit.bundle import verify_bundle
from audit.checkpoint import VerifierKey
from tests.factories import audit_events, make_device, make_group, make_user

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


async def _sign_in(page: Any, username: str, password: str) -> None:
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def test_technician_user_and_auditor_journey(app: Any, live_url: str, chromium: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    tech, tech_password = await make_user(app, "technician", username="tom")
    expert, expert_password = await make_user(app, "technician", username="eva")
    _, auditor_password = await make_user(app, "auditor", username="alice")
    group = await make_group(
        app,
        [tech, expert],
        name="front-office",
        questions=[{"id": "os", "label": "Which system?"}],
    )
    device = await make_device(app, group, name="reception-pc-1")
    errors: list[str] = []

    async def context() -> tuple[Any, Any]:
        ctx = await chromium.new_context(
            accept_downloads=True, viewport={"width": 1100, "height": 800}
        )
        page = await ctx.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return ctx, page

    async def shot(page: Any, name: str) -> None:
        await page.screenshot(path=str(ARTIFACTS / f"journey-{name}.png"), full_page=True)

    # 1. the technician follows the ticket's deep link and signs in
    tech_ctx, tp = await context()
    await tp.goto(f"{live_url}/t/helpdesk/HD-4711/connect")
    await tp.wait_for_url("**/ui/login?next=*")
    await shot(tp, "01-login")
    await _sign_in(tp, "tom", tech_password)
    await tp.wait_for_url("**/ui/new?system=helpdesk&ticket=HD-4711")
    assert await tp.get_by_label("Ticket number").input_value() == "HD-4711"

    # 2. the request form: subject (standalone ticket), device from my group, reason
    await tp.get_by_label("Ticket subject (shown to the user)").fill("Printer offline")
    await tp.get_by_label("Device", exact=True).select_option(device.id)
    await tp.get_by_label("Reason").fill("Printer driver keeps crashing after the update")
    await shot(tp, "02-request")
    await tp.get_by_role("button", name="Request consent").click()
    await tp.wait_for_selector('[data-state="awaiting_consent"]')
    code = (await tp.locator("#consent-code").inner_text()).strip()
    await shot(tp, "03-waiting")

    # 3. the end user, in their own browser, enters the code and approves
    user_ctx, up = await context()
    await up.set_viewport_size({"width": 390, "height": 844})  # a phone
    await up.goto(f"{live_url}/consent")
    await up.get_by_label("Support code").fill(code)
    await up.get_by_role("button", name="Continue").click()
    await up.wait_for_selector("text=Who is asking")
    body = await up.locator("main").inner_text()
    for expected in ("Tom", "HD-4711", "Printer offline", "Printer driver keeps crashing"):
        assert expected in body, expected
    await up.get_by_label("Your name").fill("Erika Mustermann")
    await up.get_by_label("Which system?").fill("Windows 11")
    await shot(up, "04-consent-request")
    await up.get_by_role("button", name="Approve").click()
    await up.wait_for_selector("text=End this session now")
    await shot(up, "05-consent-approved")

    # 4. the technician's page updates by itself and shows the answer
    await tp.wait_for_selector('#session-status [data-state="approved"]')
    assert "Windows 11" in await tp.locator("#answers").inner_text()
    await tp.get_by_role("button", name="I am connected — start").click()
    await tp.wait_for_selector('#session-status [data-state="active"]')
    await shot(tp, "06-technician-active")

    # 5. an expert, whose console is open, is invited and sees the session appear by itself
    exp_ctx, ep = await context()
    await ep.goto(f"{live_url}/ui/login")
    await _sign_in(ep, "eva", expert_password)
    await ep.wait_for_url("**/ui/console")
    assert await ep.locator("text=Invited to help").count() == 0
    await tp.get_by_label("Invite an expert from the device's group").select_option(expert.id)
    await tp.get_by_role("button", name="Invite an expert").click()
    await tp.wait_for_selector("#invited-experts >> text=eva")
    await ep.wait_for_selector("text=Invited to help")
    await shot(ep, "07-expert-console")
    await ep.get_by_role("link", name="Open invited session on HD-4711").click()
    await ep.wait_for_selector("text=invited you to help")
    await shot(ep, "08-expert-session")

    # 6. the end user's page turned to "in progress" by itself; they end it now and rate it
    await up.wait_for_selector('#consent-live[data-state="active"]')
    assert "In progress" in await up.locator("#consent-state").inner_text()
    await shot(up, "09-consent-in-progress")
    await up.get_by_role("button", name="End this session now").click()
    await up.wait_for_selector("text=Ended by revocation")
    await up.get_by_label("5", exact=True).check()
    await up.get_by_role("button", name="Send rating").click()
    await up.wait_for_selector("text=you rated this session 5 of 5")
    await shot(up, "10-user-ended-and-rated")
    await tp.wait_for_selector('#session-status [data-state="revoked"]')
    await shot(tp, "11-technician-sees-end")

    # 7. the auditor: green timeline and the evidence bundle
    aud_ctx, ap = await context()
    await ap.goto(f"{live_url}/ui/audit/tickets/helpdesk/HD-4711")
    await ap.wait_for_url("**/ui/login?next=*")
    await _sign_in(ap, "alice", auditor_password)
    await ap.wait_for_selector('[data-integrity="ok"]')
    await shot(ap, "12-auditor-timeline")
    await ap.get_by_label("Why do you export this evidence?").fill("journey test review")
    async with ap.expect_download() as info:
        await ap.get_by_role("button", name="Download evidence bundle").click()
    download = await info.value
    data = Path(await download.path()).read_bytes()
    assert zipfile.is_zipfile(io.BytesIO(data))
    key = await (await ap.request.get(f"{live_url}/api/v1/audit/public-key")).text()
    report = verify_bundle(data, VerifierKey.parse(key))  # offline, with the published key
    assert report.ok, report.verdict()

    stream = [t for t, _ in await audit_events(app, "helpdesk:HD-4711")]
    for event in (
        "session.requested",
        "consent.decided",
        "session.expert_invited",
        "evidence.exported",
    ):
        assert event in stream, (event, stream)
    assert errors == []
    for ctx in (tech_ctx, user_ctx, exp_ctx, aud_ctx):
        await ctx.close()
