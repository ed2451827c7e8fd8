"""Consent asked with a dialog on the desktop (zenity on a real Xvfb), answered as a person.

The agent runs in-process against the real gateway; its dialog is a real zenity on its own
Xvfb. The test looks at the screen (Xvfb's framebuffer file, ``-fbdir``) to find the ticked
boxes, unticks one with a click and allows with the keyboard (``xdotool key``): the device
signs a receipt stating the rights left ticked and the broker narrows the session to them.
When the web answers first, the dialog goes away and a window says how it was settled.
While the technician is connected a window says so, gone when the session ends.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from agent.config import AgentSettings
from agent.consent import TerminalConsole
from agent.dialog import ANSWERED_TITLE, ASK_TITLE, PRESENCE_TITLE, DesktopConsole
from agent.runner import enroll
from tests.factories import consent_token
from tests.gateway.helpers import (
    RunningAgent,
    agent_settings,
    events,
    new_token,
    read_until,
    request_session,
    terminal_uri,
    ticket_ref,
    wait_events,
    wait_state,
)

IN_CI = os.environ.get("CI", "").lower() == "true"
TOOLS = ("Xvfb", "xdotool", "zenity")


@dataclass
class Screen:
    """An Xvfb whose framebuffer is a file we can read (XWD format)."""

    name: str
    fbdir: Path

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "WAYLAND_DISPLAY"}
        env["DISPLAY"] = self.name
        return env

    def xdotool(self, *argv: str) -> str:
        done = subprocess.run(
            ["xdotool", *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,  # a search that finds nothing exits 1: an answer, not an error
        )
        return done.stdout

    def windows(self, title: str) -> list[str]:
        return self.xdotool("search", "--onlyvisible", "--name", f"^{title}$").split()

    def geometry(self, window: str) -> tuple[int, int, int, int]:
        out = self.xdotool("getwindowgeometry", "--shell", window)
        values = dict(line.split("=", 1) for line in out.split())
        return int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"])

    def pixels(self) -> tuple[int, int, bytes, int, int]:
        """(width, height, data, offset, bytes per line) of the screen, 32 bits per pixel."""
        data = (self.fbdir / "Xvfb_screen0").read_bytes()
        header = struct.unpack(">25I", data[:100])
        size, width, height, per_line, colours = (header[i] for i in (0, 4, 5, 12, 19))
        return width, height, data, size + colours * 12, per_line

    def ticked_boxes(self, window: str) -> list[tuple[int, int]]:
        """The centres of the ticked (filled blue) check boxes in the dialog, top to bottom."""
        x0, y0, w, h = self.geometry(window)
        _, _, data, offset, per_line = self.pixels()
        rows: dict[int, list[int]] = {}
        for y in range(y0, y0 + h):
            for x in range(x0, x0 + min(w, 120)):  # the first column holds the boxes
                b, g, r = data[offset + y * per_line + x * 4 : offset + y * per_line + x * 4 + 3]
                if b > 180 and r < 110 and 100 < g < 175:
                    rows.setdefault(y, []).append(x)
        boxes: list[list[int]] = []
        # A selected row is blue across the column: a box is the narrow blue of its own.
        for y in sorted(
            y for y, xs in rows.items() if len(xs) < 40
        ):  # runs of consecutive rows are one box each
            if boxes and y - boxes[-1][-1] <= 1:
                boxes[-1].append(y)
            else:
                boxes.append([y])
        return [
            (sum(rows[box[0]]) // len(rows[box[0]]), (box[0] + box[-1]) // 2)
            for box in boxes
            if len(box) >= 8  # a box, not a stray pixel of text
        ]


def _require_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        message = f"missing {', '.join(missing)} (apt install xvfb xdotool zenity)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def screen(tmp_path: Path) -> Iterator[Screen]:
    _require_tools()
    fbdir = tmp_path / "fb"
    fbdir.mkdir()
    read, write = os.pipe()
    process = subprocess.Popen(
        [
            *("Xvfb", "-displayfd", str(write), "-screen", "0", "800x600x24"),
            *("-nolisten", "tcp", "-fbdir", str(fbdir)),
        ],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            number = pipe.readline().strip().decode()
        if not number:
            raise RuntimeError("Xvfb did not start")
        yield Screen(f":{number}", fbdir)
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _until(what: str, check: Any, timeout: float = 20.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (found := await asyncio.to_thread(check)):
            await asyncio.sleep(0.1)
    assert found, what
    return found


async def _agent(
    app: Any, gateway: Any, tmp_path: Path, group: str, screen: Screen
) -> tuple[RunningAgent, DesktopConsole, io.StringIO]:
    settings: AgentSettings = agent_settings(tmp_path, consent_timeout_seconds=60.0)
    out = io.StringIO()
    terminal = TerminalConsole(out=out, notify=False, interactive=False)
    zenity = shutil.which("zenity")
    assert zenity is not None
    console = DesktopConsole(terminal, zenity, env=screen.env)
    await enroll(settings, f"127.0.0.1:{gateway.port}", await new_token(app, group), terminal)
    agent = RunningAgent(settings, console)  # type: ignore[arg-type]
    await agent.connected(gateway)
    return agent, console, out


async def test_dialog_untick_one_right_then_allow(
    app: Any,
    gateway: Any,
    people: Any,
    tmp_path: Path,
    client: httpx.AsyncClient,
    live_url: str,
    screen: Screen,
) -> None:
    agent, console, out = await _agent(app, gateway, tmp_path, people["group"].name, screen)
    token = people["tech_token"]
    try:
        created = await request_session(client, token, agent.device_id, ["shell", "files"])
        sid = created["id"]
        [window] = await _until("the dialog", lambda: screen.windows(ASK_TITLE))
        boxes = await _until("two ticked boxes", lambda: len(screen.ticked_boxes(window)) == 2)
        boxes = screen.ticked_boxes(window)
        x, y = boxes[created["capabilities"].index("files")]  # rows in the request's order
        screen.xdotool("mousemove", str(x), str(y), "click", "1")
        await _until("files unticked", lambda: len(screen.ticked_boxes(window)) == 1)
        for key in ("Tab", "Tab", "Return"):  # focus from the list to Deny, to Allow; press
            screen.xdotool("key", key)
            await asyncio.sleep(0.2)
        await wait_state(client, token, sid, "approved", timeout=20)
        resp = await client.get(
            f"/api/v1/sessions/{sid}", headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.json()["capabilities"] == ["shell"]
        [sealed] = await wait_events(app, await ticket_ref(app, sid), "consent.receipt")
        receipt = sealed.payload["data"]["receipt"]
        assert receipt["decision"] == "approve"
        assert receipt["capabilities"] == ["shell"]
        assert sealed.payload["data"]["signature"]
        assert agent.core.grants.require(sid, frozenset({"shell"}))
        assert not screen.windows(ASK_TITLE)
        # Said once the broker's consent_result is in (it may follow the state change).
        await _until("the approval said", lambda: "approved: " in out.getvalue())

        # While the technician is connected a window says so; it goes with the session.
        async with websockets.connect(await terminal_uri(live_url, token, sid)) as ws:
            await ws.send(json.dumps({"type": "input", "data": "echo up-$((2+2))\n"}))
            await read_until(ws, b"up-4")
            await _until("the presence window", lambda: screen.windows(PRESENCE_TITLE))
            resp = await client.post(
                f"/api/v1/sessions/{sid}/end", headers={"Authorization": f"Bearer {token}"}
            )
            assert resp.status_code == 200, resp.text
            await _until("the window gone", lambda: not screen.windows(PRESENCE_TITLE))
    finally:
        await console.close()
        await agent.stop()


async def test_web_answers_first_closes_the_dialog(
    app: Any,
    gateway: Any,
    people: Any,
    tmp_path: Path,
    client: httpx.AsyncClient,
    screen: Screen,
) -> None:
    agent, console, out = await _agent(app, gateway, tmp_path, people["group"].name, screen)
    token = people["tech_token"]
    try:
        created = await request_session(client, token, agent.device_id, ["shell"])
        sid = created["id"]
        await _until("the dialog", lambda: screen.windows(ASK_TITLE))
        resp = await client.post(
            f"/api/v1/consent/{consent_token(created)}/decision",
            json={"decision": "approve", "name": "Erika M."},
        )
        assert resp.status_code == 200, resp.text
        await _until("the dialog closed", lambda: not screen.windows(ASK_TITLE))
        await _until("a window saying so", lambda: screen.windows(ANSWERED_TITLE))
        assert "Erika M." in out.getvalue()
        await wait_state(client, token, sid, "approved")
        # The device signed nothing: the web's decision stands alone.
        assert not await events(app, await ticket_ref(app, sid), "consent.receipt")
    finally:
        await console.close()
        await agent.stop()
