"""A technician in Chromium sees and controls a real X display through the real agent.

Everything is real: Xvfb with pixels painted by ``xsetroot``, the ``supportbroker-agent``
program (enrolled with the CLI, its consent prompt answered on its terminal), x11vnc started
by it, the broker's gateway and desktop socket, and noVNC from node_modules in Chromium.
The technician and a watching admin sign in through the login form and click through the
session page; pixels are read from screenshots of the page, the pointer from the X server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.desktop.conftest import Display
from tests.desktop.helpers import eventually, x11vnc_on
from tests.desktop.pixels import Png, close_to
from tests.factories import make_group, make_token, make_user
from tests.gateway.helpers import new_token, request_session, ticket_ref, wait_events, wait_state

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
AGENT = str(Path(sys.executable).with_name("supportbroker-agent"))
BLUE, RED = (0x33, 0x66, 0xCC), (0xCC, 0x33, 0x33)


class AgentProcess:
    """``supportbroker-agent run`` in its own process, its terminal on pipes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen = ""

    async def wait_for(self, text: str, timeout: float = 60.0) -> None:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while text not in self.seen:
                chunk = await self.process.stdout.read(4096)
                assert chunk, f"the agent exited; it said: {self.seen[-2000:]}"
                self.seen += chunk.decode(errors="replace")

    async def answer(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def start_agent(
    app: Any, gateway: Any, group: str, env: dict[str, str], home: Path
) -> tuple[AgentProcess, str]:
    env = {
        **env,
        "SUPPORTBROKER_AGENT_CONFIG_DIR": str(home),
        "SUPPORTBROKER_AGENT_NOTIFY": "false",
        "SUPPORTBROKER_AGENT_CONSENT_PROMPT": "terminal",  # the test answers on the pipe
    }
    token = await new_token(app, group)
    enroll = await asyncio.create_subprocess_exec(
        AGENT, "enroll", "--broker", f"127.0.0.1:{gateway.port}", "--token", token,
        "--fingerprint", gateway.fingerprint, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(enroll.communicate(), 60)
    assert enroll.returncode == 0, out.decode()
    device_id = json.loads((home / "agent.json").read_text())["device_id"]
    process = await asyncio.create_subprocess_exec(
        AGENT, "run", env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    agent = AgentProcess(process)
    await eventually(lambda: device_id in gateway.links, timeout=60, what="agent connected")
    return agent, device_id


async def sign_in(browser: Any, live_url: str, username: str, password: str) -> Any:
    context = await browser.new_context(viewport={"width": 1100, "height": 850})
    page = await context.new_page()
    await page.goto(f"{live_url}/ui/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/ui/**")
    return context, page


async def screen_colour(page: Any, fx: float, fy: float) -> tuple[int, int, int]:
    """The colour the page shows at a fraction of the remote screen (a 6x6 screenshot)."""
    box = await page.locator("#screen canvas").bounding_box()
    x, y = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
    shot = await page.screenshot(clip={"x": x - 3, "y": y - 3, "width": 6, "height": 6})
    return Png(shot).pixel(3, 3)


async def open_screen(context: Any, page: Any, live_url: str, sid: str, link: str) -> Any:
    """Click the session page's screen link (it opens a new tab) and wait for the picture."""
    await page.goto(f"{live_url}/ui/sessions/{sid}")
    async with context.expect_page() as opened:
        await page.locator(link).click()
    screen = await opened.value
    logs: list[str] = []
    screen.on("console", lambda msg: logs.append(msg.text))
    screen.on("pageerror", lambda exc: logs.append(str(exc)))
    try:
        await screen.wait_for_selector("#screen[data-connected]", timeout=60000)
    except Exception as exc:
        status = await screen.locator("#status").inner_text()
        raise AssertionError(f"the screen did not connect: {status!r}; page log: {logs}") from exc
    return screen


async def test_technician_sees_and_controls_the_screen_a_watcher_only_sees(
    app: Any, gateway: Any, live_url: str, chromium: Any, display: Display, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    tech, tech_password = await make_user(app, "technician")
    admin, admin_password = await make_user(app, "admin")
    group = await make_group(app, [tech])
    display.paint("#3366cc")
    agent, device_id = await start_agent(app, gateway, group.name, display.env, tmp_path / "a")
    browsers: list[Any] = []
    try:
        token = await make_token(app, tech)
        async with httpx.AsyncClient(base_url=live_url, timeout=30) as api:
            sid = (await request_session(api, token, device_id, ["view", "control"]))["id"]
            await agent.wait_for("Allow? [y/N]")
            await agent.answer("y")  # the user at the device approves on the agent's terminal
            await wait_state(api, token, sid, "approved", timeout=60)

        context, page = await sign_in(chromium, live_url, tech.username, tech_password)
        browsers.append(context)
        screen = await open_screen(context, page, live_url, sid, "#open-screen")
        await screen.wait_for_function(
            "document.getElementById('rights').textContent.includes('control')"
        )
        assert await screen.locator("#ctrl-alt-del").is_visible()
        assert await screen.locator("#clipboard-toggle").is_visible()
        await _until_colour(screen, BLUE)
        await screen.screenshot(path=str(ARTIFACTS / "desktop-technician.png"))

        display.paint("#cc3333")  # the screen changes on the device: the page follows
        await _until_colour(screen, RED)

        display.move(3, 3)
        box = await screen.locator("#screen canvas").bounding_box()
        await screen.mouse.click(box["x"] + box["width"] / 4, box["y"] + box["height"] / 2)
        x, y = await eventually(
            lambda: (p := display.pointer()) != (3, 3) and p, what="the pointer moved"
        )
        assert abs(x - 200) <= 4
        assert abs(y - 300) <= 4

        wctx, wpage = await sign_in(chromium, live_url, admin.username, admin_password)
        browsers.append(wctx)
        watch = await open_screen(wctx, wpage, live_url, sid, "#watch-screen")
        await _until_colour(watch, RED)
        assert await watch.locator("#rights").inner_text() == "view only"
        assert not await watch.locator("#ctrl-alt-del").is_visible()
        assert not await watch.locator("#clipboard-toggle").is_visible()
        box = await watch.locator("#screen canvas").bounding_box()
        await watch.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.25)
        await watch.screenshot(path=str(ARTIFACTS / "desktop-watcher.png"))
        await wctx.close()  # its connection ends: whatever it sent has been filtered by now
        browsers.remove(wctx)
        ref = await ticket_ref(app, sid)
        closed = await wait_events(app, ref, "session.desktop_closed", timeout=60)
        assert closed[0].payload["data"]["mode"] == "watch"
        assert display.pointer() == (x, y), "a watcher's click moved the pointer"
    finally:
        for context in browsers:
            with contextlib.suppress(Exception):
                await context.close()
        await agent.stop()
    # The agent was stopped with its screen still shared: its x11vnc goes with it.
    await eventually(
        lambda: not x11vnc_on(display.name),
        timeout=10,
        what="x11vnc gone with the agent",
    )


async def _until_colour(page: Any, want: tuple[int, int, int]) -> None:
    found: tuple[int, int, int] = (0, 0, 0)
    async with asyncio.timeout(60):
        while True:
            found = await screen_colour(page, 0.5, 0.8)
            if close_to(found, want):
                return
            await asyncio.sleep(0.2)
