"""Provider launch links on the session page: a MeshCentral share link opens in a new tab, an
AnyDesk session offers its ``anydesk:`` URI, and both go only to the session's own technician
(a share link is a credential for the whole window; admins may open the page too)."""

from __future__ import annotations

from typing import Any

from broker.providers.models import ProviderSessionLink
from tests.factories import make_desk, make_user
from tests.ui.browsers import browser

SHARE = "https://mesh.example.test/sharing?c=SECRET-share-cookie"
URI = "anydesk:123456789"


async def _approved_session_with_link(app: Any, client: Any) -> tuple[Any, str, Any]:
    desk = await make_desk(app)
    tech = await browser(app, desk.tech)
    created = await tech.post(
        "/ui/sessions",
        {
            "system": "helpdesk",
            "ticket": "HD-4711",
            "device_id": desk.device.id,
            "reason": "Printer driver keeps crashing",
            "capabilities": ["view", "control"],
            "duration_minutes": "30",
        },
    )
    assert created.status_code == 303, created.text
    url = created.headers["location"]
    waiting = await tech.get(url)
    code = waiting.text.split('id="consent-code">')[1].split("<")[0]
    found = await client.post("/consent", data={"code": code})
    decided = await client.post(
        found.headers["location"] + "/decide", data={"decision": "approve", "name": "Erika"}
    )
    assert decided.status_code == 303
    sid = url.rsplit("/", 1)[1]
    async with app.state.sessionmaker() as db, db.begin():
        # The provider made its link at approval; give it what a MeshCentral/AnyDesk one has.
        link = await db.get(ProviderSessionLink, sid)
        assert link is not None
        link.launch_url, link.launch_uri = SHARE, URI
    return tech, url, desk


async def test_launch_links_only_for_the_sessions_technician(app: Any, client: Any) -> None:
    tech, url, _ = await _approved_session_with_link(app, client)
    own = await tech.get(url + "/status")
    assert f'href="{SHARE}" target="_blank" rel="noopener noreferrer"' in own.text
    assert f'href="{URI}"' in own.text

    admin, _ = await make_user(app, "admin")
    seen = await (await browser(app, admin)).get(url)
    assert seen.status_code == 200
    assert "SECRET-share-cookie" not in seen.text
    assert URI not in seen.text
    await tech.client.aclose()
