"""Live updates without reload: the end user's consent page and the technician's console
poll (htmx) while the session can still change, and stop once it cannot. The browser side
(swap only when ``data-live-key`` changes) is exercised in tests/e2e/test_journey.py."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.factories import consent_token, make_desk, open_session
from tests.ui.browsers import browser


def _live(html: str) -> dict[str, str]:
    """The attributes of the consent page's live region."""
    match = re.search(r'<div id="consent-live"(.*?)>', html, re.S)
    assert match, "no live region on the consent page"
    return dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(1)))


async def test_consent_page_polls_until_the_session_is_over(
    app: Any, client: httpx.AsyncClient
) -> None:
    desk = await make_desk(app)
    created = await open_session(client, desk)
    path = f"/consent/{consent_token(created)}"

    waiting = _live((await client.get(path)).text)
    assert waiting["hx-get"] == path
    assert waiting["hx-select"] == "#consent-live"
    assert "every" in waiting["hx-trigger"]
    assert waiting["data-state"] == "awaiting_consent"

    await client.post(path + "/decide", data={"decision": "approve", "name": "Erika"})
    approved_html = (await client.get(path)).text
    approved = _live(approved_html)
    assert approved["data-state"] == "approved"
    assert approved["data-live-key"] != waiting["data-live-key"]  # so the browser swaps
    assert 'id="end-now"' in approved_html

    # the technician starts: the same URL the page polls now says "in progress"
    tech = await browser(app, desk.tech)
    assert (await tech.post(f"/ui/sessions/{created['id']}/start")).status_code == 303
    active = _live((await client.get(path)).text)
    assert active["data-state"] == "active"

    await client.post(path + "/revoke", data={"name": "Erika"})
    over_html = (await client.get(path)).text
    over = _live(over_html)
    assert over["data-state"] == "revoked"
    assert "hx-trigger" not in over  # nothing can change any more: polling stops
    assert 'id="end-now"' not in over_html
    await tech.client.aclose()


async def test_console_and_waiting_screen_poll_with_a_key_that_follows_the_state(
    app: Any, client: httpx.AsyncClient
) -> None:
    desk = await make_desk(app)
    created = await open_session(client, desk)
    tech = await browser(app, desk.tech)
    key = re.compile(r'data-live-key="([^"]*)"')

    listing = await tech.get("/ui/console/sessions")
    assert 'hx-get="/ui/console/sessions"' in listing.text
    before = key.findall(listing.text)[0]
    status = await tech.get(f"/ui/sessions/{created['id']}/status")
    assert 'hx-trigger="every 2s"' in status.text
    status_before = key.findall(status.text)[0]

    path = f"/consent/{consent_token(created)}"
    await client.post(path + "/decide", data={"decision": "deny", "name": "Erika"})

    after = key.findall((await tech.get("/ui/console/sessions")).text)[0]
    assert after != before
    assert "denied" in after
    final = await tech.get(f"/ui/sessions/{created['id']}/status")
    assert key.findall(final.text)[0] != status_before
    assert "hx-trigger" not in final.text
    await tech.client.aclose()
