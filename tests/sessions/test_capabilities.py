"""Capabilities mean one thing each, and a session asks only what its provider can give.

The agent gives view, control (the screen), shell, files and forward; MeshCentral view,
control, shell and files; AnyDesk view and control. Asking for another is a 422 that names
what the provider offers.
The migration ``0013_capabilities`` gives ``forward`` to every agent session that carried
``control`` (port forwards rode on it) and gives it back on downgrade; on both databases.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import text

from broker.db.migrate import alembic_config
from broker.providers import offers
from tests.factories import Desk, make_device, open_session, request_session


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_concurrent_sessions": 5}


@pytest.mark.parametrize(
    ("provider", "gives"),
    [
        ("agent", ["view", "control", "shell", "files", "forward"]),
        ("meshcentral", ["view", "control", "shell", "files"]),
        ("anydesk", ["view", "control"]),
    ],
)
def test_each_provider_declares_what_it_can_give(provider: str, gives: list[str]) -> None:
    assert offers.offered(provider) == gives


@pytest.mark.parametrize(
    ("provider", "asked", "refused"),
    [
        ("anydesk", ["files", "forward", "view"], "files, forward"),
        ("anydesk", ["view", "shell"], "shell"),
        ("meshcentral", ["forward"], "forward"),
    ],
)
async def test_a_capability_the_provider_cannot_give_is_a_422(
    app: Any, client: httpx.AsyncClient, desk: Desk, provider: str, asked: list[str], refused: str
) -> None:
    device = await make_device(app, desk.group, provider=provider)
    response = await request_session(client, desk, device_id=device.id, capabilities=asked)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert f"provider {provider!r} cannot give {refused}" in body["detail"]
    assert ", ".join(offers.offered(provider)) in body["detail"]  # and says what it can


async def test_forward_is_a_capability_of_its_own(
    app: Any, client: httpx.AsyncClient, desk: Desk
) -> None:
    device = await make_device(app, desk.group, provider="agent")
    created = await open_session(client, desk, device_id=device.id, capabilities=["forward"])
    assert created["capabilities"] == ["forward"]
    assert created["recording"] == {
        "recorded": False,
        "content": [],
        "events_only": ["forward"],
        "summary": "Events only (who, when, what was opened) for forward",
    }


async def test_an_unknown_capability_is_a_422(client: httpx.AsyncClient, desk: Desk) -> None:
    response = await request_session(client, desk, capabilities=["shell", "teleport"])
    assert response.status_code == 422
    assert "capabilities" in response.json()["detail"]


def _migrate(url: str, revision: str, *, down: bool) -> None:
    cfg = alembic_config(url)
    (command.downgrade if down else command.upgrade)(cfg, revision)


async def test_the_migration_maps_forward_to_and_from_control(
    app: Any, client: httpx.AsyncClient, desk: Desk, db_url: str
) -> None:
    agent_device = await make_device(app, desk.group, provider="agent")
    forwarding = await open_session(
        client, desk, device_id=agent_device.id, capabilities=["forward", "shell"]
    )
    shell_only = await open_session(client, desk, device_id=agent_device.id, capabilities=["shell"])
    other = await open_session(client, desk, capabilities=["control", "view"])  # null provider
    await app.state.engine.dispose()  # Alembic opens its own connection

    async def capabilities(sid: str) -> list[str]:
        # Read the column itself: the API's code expects the head schema, and later
        # migrations add columns it reads, so it cannot read a downgraded database.
        async with app.state.engine.connect() as conn:
            raw = (
                await conn.execute(
                    text("SELECT capabilities FROM sessions WHERE id = :id"), {"id": sid}
                )
            ).scalar_one()
        found = json.loads(raw) if isinstance(raw, str) else raw
        assert isinstance(found, list)
        return sorted(found)

    try:
        await asyncio.to_thread(_migrate, db_url, "0014_desktop", down=True)
        # Before 0013 a forward rode on control: that is what the old code reads.
        assert await capabilities(forwarding["id"]) == ["control", "shell"]
        assert await capabilities(shell_only["id"]) == ["shell"]
        assert await capabilities(other["id"]) == ["control", "view"]
    finally:
        await app.state.engine.dispose()
        await asyncio.to_thread(_migrate, db_url, "head", down=False)
    await app.state.engine.dispose()
    # Upgrading: every agent session that had control may forward, as it could before.
    assert await capabilities(forwarding["id"]) == ["control", "forward", "shell"]
    assert await capabilities(shell_only["id"]) == ["shell"]
    assert await capabilities(other["id"]) == ["control", "view"]  # not an agent session
