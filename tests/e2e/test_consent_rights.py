"""The end user grants only some of the rights asked, in real Chromium (SQLite): the
request asks to see the screen, use the mouse and keyboard and run commands; the end user
unticks two and approves; the page, the session and the receipt then name only the screen.
Unticking everything and approving denies. Screenshots: tests/artifacts/consent-NN-*.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser_login import Logins
from tests.factories import audit_events, consent_token, make_desk, open_session

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


async def test_end_user_unticks_rights_before_approving(
    app: Any, client: httpx.AsyncClient, live_url: str, chromium: Any, db_url: str
) -> None:
    if db_url.startswith("postgresql"):
        pytest.skip("the journeys run on SQLite; the API tests cover both databases")
    ARTIFACTS.mkdir(exist_ok=True)
    desk = await make_desk(app)
    created = await open_session(client, desk, capabilities=["view", "control", "shell"])
    logins = Logins(chromium, live_url)
    try:
        context = await logins.anonymous()
        page = await context.new_page()
        await page.goto(f"{live_url}/consent/{consent_token(created)}")
        grant = page.get_by_role("group", name="What you allow (untick what you do not want)")
        await grant.get_by_label("use your mouse and keyboard").uncheck()
        await grant.get_by_label("run commands on your computer").uncheck()
        await page.get_by_label("Your name").fill("Erin")
        await page.screenshot(path=str(ARTIFACTS / "consent-01-unticked.png"), full_page=True)
        await page.get_by_role("button", name="Approve").click()
        await page.get_by_text("Approved by Erin").wait_for()
        rights = await page.locator("#consent-rights").inner_text()
        assert rights.strip() == "see your screen"
        await page.screenshot(path=str(ARTIFACTS / "consent-02-approved.png"), full_page=True)

        session = await client.get(f"/api/v1/sessions/{created['id']}", headers=desk.headers)
        assert session.json()["capabilities"] == ["view"]
        [receipt] = [
            p["data"]
            for t, p in await audit_events(app, "helpdesk:HD-4711")
            if t == "consent.decided"
        ]
        assert receipt["capabilities"] == ["view"]

        other = await make_desk(app)
        second = await open_session(client, other, capabilities=["view", "shell"])
        await page.goto(f"{live_url}/consent/{consent_token(second)}")
        for box in await page.get_by_role("checkbox").all():
            await box.uncheck()
        await page.get_by_label("Your name").fill("Erin")
        await page.get_by_role("button", name="Approve").click()
        await page.get_by_text("Denied by Erin").wait_for()
        await page.screenshot(path=str(ARTIFACTS / "consent-03-none-left.png"), full_page=True)
        await context.close()
    finally:
        await logins.close()
