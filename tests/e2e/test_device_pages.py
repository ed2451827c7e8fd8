"""The device inventory in real Chromium, as its people use it (SQLite; logins through the
form). Screenshots: tests/artifacts/devices-NN-<step>.png (git-ignored).

- admin: add a device with the form, find it by asset tag, filter by group, open it, rename
  and move it, retire it (it then hides from the list unless "show retired" is chosen);
- technician: sees their group's devices read-only (no add, rename or retire forms), and the
  request form's picker says whether each agent device is online;
- times are shown in the browser's time zone with UTC on hover.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser_login import Logins
from tests.factories import make_device, make_group, make_user

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


class Shots:
    def __init__(self) -> None:
        self.n = 0
        ARTIFACTS.mkdir(exist_ok=True)

    async def __call__(self, page: Any, step: str) -> None:
        self.n += 1
        await page.screenshot(
            path=str(ARTIFACTS / f"devices-{self.n:02d}-{step}.png"), full_page=True
        )


async def test_admin_and_technician_device_pages(
    app: Any, client: httpx.AsyncClient, live_url: str, chromium: Any, db_url: str
) -> None:
    if db_url.startswith("postgresql"):
        pytest.skip("the journeys run on SQLite; the API tests cover both databases")
    tech, tech_password = await make_user(app, "technician")
    admin, admin_password = await make_user(app, "admin")
    finance = await make_group(app, [tech], name="Finance")
    lab = await make_group(app, name="Lab")
    await make_device(app, finance, name="FIN-KIOSK", provider="agent", provider_device_id="k-1")
    shots = Shots()
    logins = Logins(chromium, live_url, timezone_id="Europe/Berlin")
    try:
        page = await (await logins.context(admin.username, admin_password)).new_page()
        await page.goto(live_url + "/ui/devices")
        add = page.get_by_role("form", name="Add a device")
        await add.get_by_label("Name", exact=True).fill("FIN-LT-042")
        await add.get_by_label("Group", exact=True).select_option(label="Finance")
        await add.get_by_label("Provider", exact=True).select_option("anydesk")
        await add.get_by_label("Id at the provider").fill("123 456 789")
        await add.get_by_label("Asset tag (optional)").fill("INV-0042")
        await add.get_by_label("Owner (optional)").fill("Erika Mustermann")
        await add.get_by_role("button", name="Add device").click()
        await page.wait_for_url("**/ui/devices/*")
        await page.get_by_role("heading", name="Device FIN-LT-042").wait_for()
        await shots(page, "added")

        # Registered time: local (Berlin) text, UTC on hover; no ISO string on the page.
        registered = page.locator("dd time").first
        assert "UTC" in (await registered.get_attribute("title") or "")
        assert "UTC" not in await registered.inner_text()
        assert "T" not in (await registered.inner_text()).replace("GMT", "")

        await page.goto(live_url + "/ui/devices")
        await page.get_by_label("Name, provider id, asset tag or owner").fill("inv-0042")
        await page.get_by_role("button", name="Search").click()
        rows = page.locator("table.data tbody tr")
        await page.wait_for_url("**q=inv-0042**")
        assert await rows.count() == 1
        assert "FIN-LT-042" in await rows.first.inner_text()
        search = page.get_by_role("search", name="Find devices")
        await search.get_by_label("Group", exact=True).select_option(label="Lab")
        await page.get_by_label("Name, provider id, asset tag or owner").fill("")
        await page.get_by_role("button", name="Search").click()
        await page.get_by_text("No device matches.").wait_for()
        await shots(page, "filtered")

        await page.goto(live_url + "/ui/devices?q=FIN-LT")
        await page.get_by_role("link", name="FIN-LT-042").click()
        await page.get_by_label("Name", exact=True).fill("FIN-LT-043")
        await page.get_by_label("Group", exact=True).select_option(label="Lab")
        await page.get_by_role("button", name="Save").click()
        await page.get_by_role("heading", name="Device FIN-LT-043").wait_for()
        assert "Lab" in await page.locator("dl").inner_text()
        await page.get_by_role("button", name="Retire FIN-LT-043").click()
        await page.get_by_role("heading", name="Device FIN-LT-043 (retired)").wait_for()
        await shots(page, "retired")
        await page.goto(live_url + "/ui/devices")
        assert "FIN-LT-043" not in await page.locator("main").inner_text()
        await page.goto(live_url + "/ui/devices?retired=yes")
        assert "FIN-LT-043" in await page.locator("main").inner_text()

        tpage = await (await logins.context(tech.username, tech_password)).new_page()
        await tpage.goto(live_url + "/ui/devices")
        text = await tpage.locator("main").inner_text()
        assert "FIN-KIOSK" in text
        assert "no agent link" in text
        assert await tpage.get_by_role("button", name="Add device").count() == 0
        await shots(tpage, "technician-list")
        await tpage.get_by_role("link", name="FIN-KIOSK").click()
        await tpage.get_by_role("heading", name="Device FIN-KIOSK").wait_for()
        assert await tpage.get_by_role("button", name="Save").count() == 0
        assert await tpage.get_by_role("button", name="Retire FIN-KIOSK").count() == 0
        # The technician may not post the admin's forms either.
        refused = await tpage.request.post(live_url + "/ui/devices", form={"name": "x"})
        assert refused.status in (403, 422)
        assert lab.name == "Lab"
    finally:
        await logins.close()
    assert logins.errors == []
