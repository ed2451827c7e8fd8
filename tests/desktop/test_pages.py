"""The screen page and the noVNC files it loads: who gets the page, and which files are served.

The page itself holds nothing secret (the socket's one-time ticket is the credential, and its
endpoint is in the authorization matrix); it still needs a signed-in staff member, and it
carries that browser session's CSRF token for the ticket request.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.factories import make_token, make_user
from tests.ui.browsers import browser

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@SQLITE
@pytest.mark.parametrize(
    ("role", "status"),
    [(None, 401), ("technician", 200), ("admin", 200), ("auditor", 200)],
)
async def test_who_gets_the_screen_page(app: Any, role: str | None, status: int) -> None:
    user = (await make_user(app, role))[0] if role else None
    who = await browser(app, user)
    resp = await who.get("/desktop/some-session?mode=control")
    assert resp.status_code == status, resp.text
    if status == 200:
        assert f'name="csrf-token" content="{who.csrf}"' in resp.text
        assert '<script type="module" src="/static/desktop.js">' in resp.text


@SQLITE
async def test_a_system_token_without_sessions_read_gets_no_page(
    app: Any, client: httpx.AsyncClient
) -> None:
    token = await make_token(app, system="helpdesk")
    resp = await client.get("/desktop/x", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 403


@SQLITE
@pytest.mark.parametrize("mode", ["root", "join ", "../etc"])
async def test_a_made_up_mode_is_refused(app: Any, mode: str) -> None:
    who = await browser(app, (await make_user(app, "technician"))[0])
    assert (await who.get("/desktop/x", params={"mode": mode})).status_code == 422


@SQLITE
@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/vendor/novnc/core/rfb.js", 200),
        ("/vendor/novnc/core/decoders/tight.js", 200),
        ("/vendor/novnc/vendor/pako/lib/zlib/inflate.js", 200),
        ("/vendor/novnc/package.json", 404),
        ("/vendor/novnc/core/../package.json", 404),
        ("/vendor/novnc/core/%2e%2e/%2e%2e/htmx.org/package.json", 404),
        ("/vendor/novnc/docs/API.md", 404),
        ("/static/desktop.js", 200),
        ("/static/desktop_replay.js", 200),
    ],
)
async def test_novnc_is_served_from_node_modules_and_nothing_else(
    client: httpx.AsyncClient, path: str, status: int
) -> None:
    resp = await client.get(path)
    assert resp.status_code == status, path
    if status == 200:
        assert resp.headers["content-type"].startswith("text/javascript")
