"""The request form offers only what the chosen device's tool can give, and says what of it
is recorded; a right the tool cannot give is refused with the reason, even without the
page's script (the form is posted as a browser without JavaScript would).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.browser_login import Logins, form_login
from tests.factories import make_device, make_group, make_user

VISIBLE = """() => [...document.querySelectorAll('#capabilities [data-capability]')]
  .filter((l) => getComputedStyle(l).display !== 'none').map((l) => [l.dataset.capability,
    l.querySelector('input').checked, l.querySelector('.capability-recorded').textContent])"""


@pytest.fixture
async def devices(app: Any) -> dict[str, Any]:
    tech, password = await make_user(app, "technician")
    group = await make_group(app, [tech], name="front-office")
    return {
        "tech": tech,
        "password": password,
        "agent": await make_device(app, group, name="pc-042", provider="agent"),
        "mesh": await make_device(app, group, name="pc-043", provider="meshcentral"),
        "anydesk": await make_device(app, group, name="pc-044", provider="anydesk"),
    }


async def test_the_form_offers_what_the_devices_tool_gives(
    db_url: str, logins: Logins, devices: dict[str, Any]
) -> None:
    if db_url.startswith("postgresql"):
        pytest.skip("the form's behaviour does not depend on the database; checked on SQLite")
    page = await logins.open(devices["tech"].username, devices["password"], "/ui/new")
    device = page.get_by_label("Device", exact=True)
    await device.select_option(devices["agent"].id)
    assert await page.evaluate(VISIBLE) == [
        ["view", False, "(recorded)"],  # nothing is ticked for the technician
        ["control", False, "(recorded)"],
        ["shell", False, "(recorded)"],
        ["files", False, "(events only, not recorded)"],
        ["forward", False, "(events only, not recorded)"],
    ]
    await page.get_by_label("Run commands (terminal)").check()
    await device.select_option(devices["anydesk"].id)
    assert await page.evaluate(VISIBLE) == [
        ["view", False, "(events only, not recorded)"],
        ["control", False, "(events only, not recorded)"],
    ]  # the terminal the agent could give is gone, and unticked
    assert not await page.get_by_label("Run commands (terminal)").is_checked()
    await device.select_option(devices["mesh"].id)
    assert [c for c, _, _ in await page.evaluate(VISIBLE)] == ["view", "control", "shell", "files"]


async def test_a_right_the_tool_cannot_give_is_refused_with_the_reason(
    app: Any, devices: dict[str, Any]
) -> None:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.10", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://broker.test") as web:
        csrf = await form_login(web, devices["tech"].username, devices["password"])
        form = await web.get("/ui/new")
        assert 'data-provider="agent"' in form.text
        sent = await web.post(
            "/ui/sessions",
            data={
                "csrf_token": csrf,
                "system": "helpdesk",
                "ticket": "HD-4711",
                "subject": "Printer offline",
                "device_id": devices["anydesk"].id,
                "reason": "Printer driver keeps crashing",
                "capabilities": ["view", "shell"],
                "duration_minutes": "30",
            },
        )
    assert sent.status_code == 422
    assert "provider &#39;anydesk&#39; cannot give shell; it offers view, control" in sent.text
