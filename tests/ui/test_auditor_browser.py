"""The auditor pages in a real headless Chromium: the timeline is green, the replay page asks
for a reason and then plays the recording with asciinema-player (from npm), and the reports
page draws its charts with Chart.js (from npm). Screenshots go to tests/artifacts/."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.gateway.recording import open_recorder
from broker.sessions import service as sessions
from tests.browser_login import Logins
from tests.factories import audit_events, consent_token, make_desk, make_user, open_session

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


async def test_auditor_sees_green_timeline_replays_and_reads_charts(
    app: Any, client: httpx.AsyncClient, live_url: str, logins: Logins
) -> None:
    desk = await make_desk(app)
    created = await open_session(
        client, desk, ticket={"system": "helpdesk", "external_id": "HD-4711", "subject": "Printer"}
    )
    await client.post(
        f"/api/v1/consent/{consent_token(created)}/decision",
        json={"decision": "approve", "name": "Erika"},
    )
    sid = created["id"]
    async with app.state.sessionmaker() as db:
        record, _ = await sessions.load(db, sid)
    recorder = await open_recorder(
        app.state.audit_log, app.state.engine.begin, record, chunk_seconds=60
    )
    await recorder.output(b"$ echo browser-replay-42\r\nbrowser-replay-42\r\n")
    await recorder.close("session ended")

    auditor, password = await make_user(app, "auditor")
    ARTIFACTS.mkdir(exist_ok=True)
    page = await logins.open(auditor.username, password, "/ui/audit/tickets/helpdesk/HD-4711")
    await page.wait_for_selector('[data-integrity="ok"]')
    await page.screenshot(path=str(ARTIFACTS / "auditor-timeline.png"), full_page=True)

    await page.goto(f"{live_url}/ui/audit/sessions/{sid}/replay")
    await page.get_by_label("Why do you view this recording?").fill("browser test review")
    await page.get_by_role("button", name="Record my reason and play").click()
    await page.wait_for_selector("#player .ap-wrapper")
    await page.locator("#player .ap-wrapper").first.focus()
    await page.keyboard.press("Space")  # the player's own keyboard control: play
    await page.wait_for_function(
        "document.querySelector('#player').innerText.includes('browser-replay-42')"
    )
    await page.screenshot(path=str(ARTIFACTS / "auditor-replay.png"), full_page=True)
    viewed = [p for t, p in await audit_events(app, "helpdesk:HD-4711") if t == "recording.viewed"]
    assert [v["data"]["reason"] for v in viewed] == ["browser test review"]

    await page.goto(f"{live_url}/ui/reports")
    await page.wait_for_function(
        "window.Chart && Chart.getChart(document.getElementById('chart-technicians'))"
    )
    drawn = await page.evaluate(
        "Chart.getChart(document.getElementById('chart-technicians')).data.datasets[0].data"
    )
    assert drawn == [1]
    await page.screenshot(path=str(ARTIFACTS / "reports.png"), full_page=True)
    assert logins.errors == []


async def test_auditor_searches_reads_words_and_security_events(
    app: Any, client: httpx.AsyncClient, live_url: str, logins: Logins
) -> None:
    """Search by a part of the subject; the timeline in words with a details table (raw
    JSON on demand); a failed sign-in found among the log's own events; local times."""
    desk = await make_desk(app)
    created = await open_session(
        client, desk, ticket={"system": "helpdesk", "external_id": "HD-5150", "subject": "Scanner"}
    )
    await client.post(
        f"/api/v1/consent/{consent_token(created)}/decision",
        json={"decision": "approve", "name": "Erin"},
    )
    failed = await client.post(
        "/api/v1/auth/login", json={"username": "mallory", "password": "not-the-password"}
    )
    assert failed.status_code == 401
    auditor, password = await make_user(app, "auditor")
    ARTIFACTS.mkdir(exist_ok=True)
    page = await logins.open(auditor.username, password, "/ui/audit/sessions")
    await page.get_by_label("Ticket id or subject (any part)").fill("scan")
    await page.get_by_role("button", name="Search").click()
    await page.get_by_text("helpdesk:HD-5150").wait_for()
    await page.get_by_role("link", name="Ticket timeline").click()
    await page.wait_for_selector('[data-integrity="ok"]')
    row = page.locator("tr[data-position]", has_text="The consent receipt: who decided what").first
    await row.wait_for()
    await row.get_by_text("Details").click()
    assert "Erin" in await row.locator("table.payload").inner_text()
    await row.get_by_text("Raw JSON").click()
    assert '"decision"' in await row.locator("pre").inner_text()
    when = row.locator("time").first
    assert "UTC" in (await when.get_attribute("title") or "")
    await page.screenshot(path=str(ARTIFACTS / "auditor-words.png"), full_page=True)

    await page.get_by_role("link", name="Security events").click()
    found = page.locator('tr[data-event="auth.login_failed"]').first
    await found.wait_for()
    assert "A sign-in failed" in await found.inner_text()
    await found.get_by_text("Details").click()
    assert "mallory" in await found.locator("table.payload").inner_text()
    await page.screenshot(path=str(ARTIFACTS / "auditor-security.png"), full_page=True)
    assert logins.errors == []


async def test_auditor_searches_by_event_in_words_and_dates(
    app: Any, client: httpx.AsyncClient, live_url: str, logins: Logins, db_url: str
) -> None:
    """The auditor picks an event by its words and a date range; only the sessions whose
    ticket's log holds such an event that day are listed. A journey: SQLite only (the
    query runs on both databases in tests/ui/test_auditor_pages.py)."""
    if db_url.startswith("postgresql"):
        pytest.skip("browser journeys run on SQLite; the search's SQL is tested on both")
    from datetime import UTC, datetime

    desk = await make_desk(app)
    await open_session(client, desk, ticket={"system": "helpdesk", "external_id": "HD-61"})
    refused = await open_session(
        client, desk, ticket={"system": "helpdesk", "external_id": "HD-62"}
    )
    await client.post(
        f"/api/v1/consent/{consent_token(refused)}/decision",
        json={"decision": "deny", "name": "Erin"},
    )
    auditor, password = await make_user(app, "auditor")
    page = await logins.open(auditor.username, password, "/ui/audit/sessions")
    await page.get_by_text("helpdesk:HD-61").wait_for()
    await page.get_by_label("With an event").select_option(label="The end user refused the request")
    today = datetime.now(UTC).date().isoformat()
    await page.get_by_label("Requested from").fill(today)
    await page.get_by_label("Requested to (inclusive)").fill(today)
    await page.get_by_role("button", name="Search").click()
    await page.wait_for_url("**event=session.denied**")
    await page.locator("#results", has_text="helpdesk:HD-62").wait_for()
    assert "helpdesk:HD-61" not in await page.locator("#results").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "auditor-event-search.png"), full_page=True)
    # an earlier day: the event happened today, so nothing
    await page.get_by_label("Requested from").fill("2025-01-01")
    await page.get_by_label("Requested to (inclusive)").fill("2025-01-02")
    await page.get_by_role("button", name="Search").click()
    await page.get_by_text("No session matches.").wait_for()
    assert logins.errors == []


async def test_auditor_types_a_device_and_verifies_the_log_from_the_timeline(
    app: Any, client: httpx.AsyncClient, live_url: str, logins: Logins, db_url: str
) -> None:
    """The device field suggests names as the auditor types (no list of every device on the
    page); the timeline shows each record's inclusion proof and verifies the whole log when
    asked. A journey: SQLite only (tests/ui/test_auditor_pages.py covers both databases)."""
    if db_url.startswith("postgresql"):
        pytest.skip("browser journeys run on SQLite; the queries are tested on both")
    desk = await make_desk(app)
    await open_session(client, desk, ticket={"system": "helpdesk", "external_id": "HD-71"})
    auditor, password = await make_user(app, "auditor")
    page = await logins.open(auditor.username, password, "/ui/audit/sessions")
    field = page.get_by_label("Device", exact=True)
    await field.press_sequentially(desk.device.name[:4])
    suggestion = page.locator(f'#f-device-names option[value="{desk.device.name}"]')
    await suggestion.wait_for(state="attached")
    await field.fill(desk.device.name)
    await page.get_by_role("button", name="Search").click()
    await page.locator("#results", has_text="helpdesk:HD-71").wait_for()
    await page.get_by_role("link", name="Ticket timeline").first.click()
    await page.wait_for_selector('[data-integrity="ok"]')
    assert await page.locator('[data-verification="none"]').count() == 1
    await page.get_by_role("button", name="Verify the whole log now").click()
    for _ in range(100):  # the verification runs in the background; the page shows its end
        if await page.locator('[data-verification="ok"]').count():
            break
        await asyncio.sleep(0.2)
        await page.reload()
    assert "asked for by" in await page.locator("#log-verification").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "auditor-verify-now.png"), full_page=True)
    assert "audit.verification_requested" in [
        t for t, _ in await audit_events(app, "helpdesk:HD-71")
    ]
    assert logins.errors == []
