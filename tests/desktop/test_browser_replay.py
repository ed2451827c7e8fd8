"""An auditor replays a recorded desktop session in Chromium, with noVNC's decoders.

The session is real end to end: Xvfb painted blue then red by ``xsetroot``, the
``supportbroker-agent`` program, x11vnc, the technician's noVNC page in Chromium (so the
recording holds what a real viewer asked for: noVNC's encodings and pixel format). The
auditor signs in through the login form, gives a reason, plays the recording to its end
(red), then drags the position back to before the repaint (blue); pixels are read from the
player's canvas.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.desktop.conftest import Display
from tests.desktop.pixels import close_to
from tests.desktop.test_browser_desktop import (
    ARTIFACTS,
    BLUE,
    RED,
    _until_colour,
    open_screen,
    sign_in,
    start_agent,
)
from tests.factories import make_group, make_token, make_user
from tests.gateway.helpers import events, request_session, ticket_ref, wait_events, wait_state

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
QUIET_MS = 2500  # the screen stays still this long between the two colours


async def canvas_colour(page: Any) -> tuple[int, int, int]:
    """The player's canvas at 50 %, 80 % (the colour noVNC drew there)."""
    rgb = await page.evaluate(
        """() => {
          const c = document.querySelector('#screen canvas');
          const d = c.getContext('2d').getImageData(
            Math.floor(c.width / 2), Math.floor(c.height * 0.8), 1, 1).data;
          return [d[0], d[1], d[2]];
        }"""
    )
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


async def until_canvas(page: Any, want: tuple[int, int, int]) -> None:
    found: tuple[int, int, int] = (0, 0, 0)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            while not close_to(found := await canvas_colour(page), want):
                await asyncio.sleep(0.1)
    assert close_to(found, want), f"the player shows {found}, not {want}"


async def test_an_auditor_replays_the_screen_with_play_seek_and_speed(
    app: Any, gateway: Any, live_url: str, chromium: Any, display: Display, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    tech, tech_password = await make_user(app, "technician")
    auditor, auditor_password = await make_user(app, "auditor")
    group = await make_group(app, [tech])
    display.paint("#3366cc")
    agent, device_id = await start_agent(app, gateway, group.name, display.env, tmp_path / "a")
    browsers: list[Any] = []
    try:
        token = await make_token(app, tech)
        async with httpx.AsyncClient(base_url=live_url, timeout=30) as api:
            sid = (await request_session(api, token, device_id, ["view", "control"]))["id"]
            await agent.wait_for("Allow? [y/N]")
            await agent.answer("y")
            await wait_state(api, token, sid, "approved", timeout=60)

        context, page = await sign_in(chromium, live_url, tech.username, tech_password)
        browsers.append(context)
        screen = await open_screen(context, page, live_url, sid, "#open-screen")
        await _until_colour(screen, BLUE)
        await asyncio.sleep(QUIET_MS / 1000)  # a still screen: nothing is sent meanwhile
        display.paint("#cc3333")
        await _until_colour(screen, RED)
        await context.close()  # the technician leaves: the recording is sealed
        browsers.remove(context)
        ref = await ticket_ref(app, sid)
        await wait_events(app, ref, "recording.ended", timeout=60)

        actx, apage = await sign_in(chromium, live_url, auditor.username, auditor_password)
        browsers.append(actx)
        logs: list[str] = []
        apage.on("pageerror", lambda exc: logs.append(str(exc)))
        apage.on("console", lambda msg: msg.type == "error" and logs.append(msg.text))
        await apage.goto(f"{live_url}/ui/audit/sessions/{sid}")
        await apage.get_by_role("link", name="Replay a recording…").click()
        await apage.get_by_label("Why do you view this recording?").fill("complaint HD-77")
        await apage.get_by_role("button", name="Record my reason and play").click()
        try:
            await apage.wait_for_selector("#screen[data-ready]", timeout=30000)
        except Exception as exc:
            (ARTIFACTS / "desktop-replay.html").write_text(await apage.content())
            raise AssertionError(f"the player did not start; page log: {logs}") from exc
        assert logs == []
        assert await apage.locator("#player-state").inner_text() == "paused"

        await apage.get_by_label("Speed").select_option("8")
        await apage.get_by_role("button", name="Play").click()
        await apage.wait_for_selector("#screen[data-state=ended]", timeout=60000)
        await until_canvas(apage, RED)
        await apage.screenshot(path=str(ARTIFACTS / "desktop-replay-end.png"))

        # Seek back into the still stretch before the repaint: a fresh noVNC is fed up to it.
        marks = json.loads(await apage.locator("#rfb-data").text_content())["marks"]
        quiet = next(a[0] for a, b in itertools.pairwise(marks) if b[0] - a[0] >= QUIET_MS)
        await apage.locator("#seek").fill(str(quiet + 10))
        await apage.locator("#seek").dispatch_event("change")
        await until_canvas(apage, BLUE)
        assert await apage.locator("#player-state").inner_text() == "paused"
        await apage.get_by_role("button", name="Play").click()  # and on from there
        await apage.wait_for_selector("#screen[data-state=ended]", timeout=60000)
        await until_canvas(apage, RED)
        assert logs == []

        (viewed,) = await events(app, ref, "recording.viewed")
        assert viewed.payload["data"]["reason"] == "complaint HD-77"
        assert viewed.payload["data"]["auditor_id"] == auditor.id
    finally:
        for ctx in browsers:
            with contextlib.suppress(Exception):
                await ctx.close()
        await agent.stop()
