""" "Recorded" tells the truth per provider and capability: we record the agent's terminal
and screen;
for MeshCentral and AnyDesk we keep the events (who connected, when), never the screen. The
end user reads it on the consent page, the technician on the session page, clients in the API.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.browser_login import form_login
from tests.factories import (
    Desk,
    consent_token,
    make_device,
    make_group,
    make_token,
    make_user,
    open_session,
)

NOT_RECORDED = "No — what is shown on your computer is not recorded."
TERMINAL = "Yes — the terminal (everything typed and shown) is recorded"


@pytest.mark.parametrize(
    ("provider", "capabilities", "content", "page_says", "page_never_says"),
    [
        ("agent", ["shell", "files"], ["shell"], TERMINAL, NOT_RECORDED),
        ("agent", ["view", "control"], ["view", "control"], "Yes — the screen is", NOT_RECORDED),
        ("meshcentral", ["view", "control"], [], NOT_RECORDED, "Yes —"),
        ("anydesk", ["view"], [], NOT_RECORDED, "Yes —"),
    ],
)
async def test_consent_page_and_api_say_what_is_recorded(
    pages: Any,
    app: Any,
    client: httpx.AsyncClient,
    desk: Desk,
    provider: str,
    capabilities: list[str],
    content: list[str],
    page_says: str,
    page_never_says: str,
) -> None:
    device = await make_device(app, desk.group, provider=provider)
    created = await open_session(client, desk, device_id=device.id, capabilities=capabilities)
    token = consent_token(created)

    view = (await client.get(f"/api/v1/consent/{token}")).json()
    assert view["recorded"] is bool(content)
    assert view["recording"]["content"] == content
    assert view["recording"]["events_only"] == [c for c in capabilities if c not in content]
    assert created["recording"] == view["recording"]  # the technician's API says the same

    page = await client.get(f"/consent/{token}")
    assert page.status_code == 200
    assert page_says in page.text
    assert page_never_says not in page.text
    if "files" in capabilities:  # the files right is named, and said to be logged only
        assert "Not recorded, only logged as events: copy files to and from your computer" in (
            page.text
        )


async def test_the_technicians_session_page_says_what_is_recorded(
    app: Any, client: httpx.AsyncClient
) -> None:
    tech, password = await make_user(app, "technician")
    group = await make_group(app, [tech])
    desk = Desk(tech, await make_token(app, tech), group, await make_device(app, group))
    mesh = await make_device(app, group, provider="meshcentral")
    agent = await make_device(app, group, provider="agent")
    on_mesh = await open_session(client, desk, device_id=mesh.id, capabilities=["view"])
    on_agent = await open_session(client, desk, device_id=agent.id, capabilities=["shell"])
    transport = httpx.ASGITransport(app=app, client=("198.51.100.11", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://broker.test") as web:
        await form_login(web, tech.username, password)
        mesh_page = await web.get(f"/ui/sessions/{on_mesh['id']}")
        agent_page = await web.get(f"/ui/sessions/{on_agent['id']}")
    assert "Events only (who, when, what was opened) for view" in mesh_page.text
    assert "Recorded: the terminal (everything typed and shown)" in agent_page.text
