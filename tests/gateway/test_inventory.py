"""The device inventory reads what the real gateway wrote: an enrolled agent that holds its
link is online with the version it reported and a last-seen time; retiring the device
revokes its key, so the agent cannot dial in again."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from agent import __version__ as agent_version
from tests.factories import bearer
from tests.gateway.helpers import ScriptedPrompter, enrolled_agent

API = "/api/v1/devices"


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
