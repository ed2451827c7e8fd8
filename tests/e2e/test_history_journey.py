"""The end user's history in real Chromium (SQLite): they open their consent link, approve,
follow the link to their computer's history, see the session (who, why, which rights, its
status) and download its consent receipt, the one sealed in the audit log. Another
device's session is not shown. Screenshots: tests/artifacts/history-NN-*.png."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785

from tests.browser_login import Logins
from tests.factories import audit_events, consent_token, make_desk, open_session

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


async def test_end_user_approves_then_reads_history_and_downloads_the_receipt(
    app: Any, client: httpx.AsyncClient, live_url: str, chromium: Any, db_url: str, tmp_path: Path
) -> None:
    if db_url.startswith("postgresql"):
        pytest.skip("the journeys run on SQLite; the API tests cover both databases")
    ARTIFACTS.mkdir(exist_ok=True)
    desk = await make_desk(app)
    created = await open_session(client, desk, reason="Outlook crashes when opening the calendar")
    elsewhere = await open_session(
        client, await make_desk(app), reason="Somebody else's laptop needs a driver"
    )
    logins = Logins(chromium, live_url)
    try:
        context = await logins.anonymous()
        page = await context.new_page()
        await page.goto(f"{live_url}/consent/{consent_token(created)}")
        await page.get_by_label("Your name").fill("Erin")
        await page.get_by_role("button", name="Approve").click()
        await page.get_by_text("Approved by Erin").wait_for()

        await page.get_by_role("link", name="Every remote support session on this computer").click()
        await page.get_by_role("heading", name=f"Remote support on {desk.device.name}").wait_for()
        card = page.locator(f"#session-{created['id']}")
        assert await card.locator(".history-technician").inner_text() == desk.tech.display_name
        reason = await card.locator(".history-reason").inner_text()
        assert reason == "Outlook crashes when opening the calendar"
        assert "see your screen" in await card.inner_text()
        assert await card.locator(".history-state").get_attribute("data-state") == "approved"
        assert "Somebody else" not in await page.content()
        assert elsewhere["id"] not in await page.content()
        await page.screenshot(path=str(ARTIFACTS / "history-01-device.png"), full_page=True)

        async with page.expect_download() as waiting:
            await card.get_by_role("link", name="Download the consent receipt").click()
        download = await waiting.value
        saved = tmp_path / download.suggested_filename
        await download.save_as(saved)
        document = json.loads(saved.read_text())
        await context.close()
    finally:
        await logins.close()

    assert download.suggested_filename == f"consent-receipt-{created['id']}.json"
    [sealed] = [
        p["data"] for t, p in await audit_events(app, "helpdesk:HD-4711") if t == "consent.decided"
    ]
    assert document["receipt"] == sealed
    assert document["receipt"]["decided_by"] == "Erin"
    assert document["receipt_sha256"] == hashlib.sha256(rfc8785.dumps(sealed)).hexdigest()
