"""The device inventory reads what the real gateway wrote: an enrolled agent that holds its
link is online with the version it reported and a last-seen time; retiring the device
revokes its key, so the agent cannot dial in again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent import __version__ as agent_version
from tests.factories import bearer
from tests.gateway.helpers import ScriptedPrompter, enrolled_agent

API = "/api/v1/devices"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def httpx_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://broker.test")


async def _device(client: httpx.AsyncClient, token: str, device_id: str) -> dict[str, Any]:
    response = await client.get(f"{API}/{device_id}", headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _until(client: httpx.AsyncClient, token: str, device_id: str, online: bool) -> Any:
    async with asyncio.timeout(10):  # presence is written in batches, shortly after
        while (found := await _device(client, token, device_id))["online"] is not online:
            await asyncio.sleep(0.05)
    return found


async def test_presence_version_and_retire(
    app: Any, gateway: Any, people: Any, client: httpx.AsyncClient, tmp_path: Any
) -> None:
    admin, tech = people["admin_token"], people["tech_token"]
    agent = await enrolled_agent(app, gateway, tmp_path, people["group"].name, ScriptedPrompter())
    try:
        found = await _until(client, admin, agent.device_id, online=True)
        assert found["agent_version"] == agent_version
        assert found["last_seen_at"] is not None
        # The technician of the group sees the same presence; the online filter finds it.
        listed = await client.get(API, params={"online": "true"}, headers=bearer(tech))
        assert [d["id"] for d in listed.json()["items"]] == [agent.device_id]
        offline = await client.get(API, params={"online": "false"}, headers=bearer(tech))
        assert offline.json()["total"] == 0
    finally:
        await agent.stop()

    retired = await client.post(f"{API}/{agent.device_id}/retire", headers=bearer(admin))
    assert retired.status_code == 200, retired.text
    assert retired.json()["retired_at"] is not None
    # Hidden from the list unless asked for; the agent's key no longer opens a link.
    assert (await client.get(API, headers=bearer(admin))).json()["total"] == 0
    again = await client.get(API, params={"include_retired": "true"}, headers=bearer(admin))
    assert [d["id"] for d in again.json()["items"]] == [agent.device_id]
    async with app.state.sessionmaker() as db:
        from broker.gateway.models import AgentKey

        key = await db.get(AgentKey, agent.device_id)
    assert key is not None
    assert key.revoked_at is not None


async def test_technician_sees_the_agent_online_in_chromium(
    app: Any,
    gateway: Any,
    people: Any,
    live_url: str,
    chromium: Any,
    tmp_path: Any,
    db_url: str,
) -> None:
    """The technician's picker and device pages say "online" (and the agent's version) for
    a device whose real agent holds its link; logged in through the form."""
    if db_url.startswith("postgresql"):
        pytest.skip("the pages run on SQLite here; the API test covers both databases")
    from tests.browser_login import Logins
    from tests.factories import PASSWORDS

    agent = await enrolled_agent(app, gateway, tmp_path, people["group"].name, ScriptedPrompter())
    logins = Logins(chromium, live_url)
    try:
        await _until(httpx_client(app), people["admin_token"], agent.device_id, online=True)
        tech = people["tech"]
        page = await (await logins.context(tech.username, PASSWORDS[tech.id])).new_page()
        await page.goto(live_url + "/ui/new")
        picker = page.get_by_label("Device", exact=True)
        options = await picker.locator("option").all_inner_texts()
        assert any(o.endswith("· online") for o in options), options
        await picker.select_option(agent.device_id)
        await page.screenshot(path=str(ARTIFACTS / "devices-10-picker-online.png"), full_page=True)
        await page.goto(live_url + f"/ui/devices/{agent.device_id}")
        facts = await page.locator("dl").inner_text()
        assert "online" in facts
        assert agent_version in facts
        await page.screenshot(path=str(ARTIFACTS / "devices-11-agent-online.png"), full_page=True)
    finally:
        await logins.close()
        await agent.stop()
