"""The screen through the broker and the agent, against a real X display (Xvfb + x11vnc).

The agent is the real one (``agent.runner.run``, real asyncssh) with its desktop on the
test's display; viewers speak RFB to the broker's WebSocket. Input is judged by the X server
itself: ``xdotool getmouselocation`` says whether the pointer moved.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from agent.desktop import DesktopConfig
from tests.desktop.conftest import Display
from tests.desktop.helpers import desktop_agent, eventually, x11vnc_on
from tests.desktop.rfbclient import RfbClient
from tests.gateway.helpers import (
    ScriptedPrompter,
    request_session,
    ticket_ref,
    wait_events,
    wait_state,
)

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


async def _session(client: httpx.AsyncClient, people: Any, agent: Any, caps: list[str]) -> str:
    created = await request_session(client, people["tech_token"], agent.device_id, caps)
    await wait_state(client, people["tech_token"], created["id"], "approved", timeout=30)
    return str(created["id"])


async def _stream_passed(viewer: RfbClient) -> None:
    """A FramebufferUpdateRequest sent after the input came back answered: the server has
    read everything the broker passed before it (RFB is processed in order)."""
    await viewer.full_frame()


async def test_control_moves_the_pointer_and_watchers_cannot(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient,
    live_url: str, display: Display,
) -> None:  # fmt: skip
    display.paint("#3366cc")
    config = DesktopConfig.from_environment(display.env)
    agent = await desktop_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True]), config
    )
    try:
        sid = await _session(client, people, agent, ["view", "control"])
        tech = await RfbClient.open(live_url, people["tech_token"], sid, "control")
        assert tech.ready["input"] is True
        assert (tech.width, tech.height) == (800, 600)
        frame = await tech.full_frame()
        assert frame.pixel(100, 500) == (0x33, 0x66, 0xCC)  # what xsetroot painted

        display.move(5, 5)
        await tech.pointer(321, 123)
        await eventually(lambda: display.pointer() == (321, 123), what="pointer at 321,123")

        watcher = await RfbClient.open(live_url, people["admin_token"], sid, "watch")
        assert watcher.ready["input"] is False
        await watcher.pointer(50, 60, buttons=1)
        await watcher.key(0x61, True)
        await watcher.key(0x61, False)
        await _stream_passed(watcher)
        assert display.pointer() == (321, 123), "a watcher moved the pointer"

        # The technician still controls while a watcher looks on: connections are separate.
        await tech.pointer(222, 111)
        await eventually(lambda: display.pointer() == (222, 111), what="pointer at 222,111")
        await watcher.close()
        ref = await ticket_ref(app, sid)
        closed = await wait_events(app, ref, "session.desktop_closed", timeout=30)
        assert closed[0].payload["data"]["mode"] == "watch"
        assert closed[0].payload["data"]["dropped_input"] == 3
        opened = await wait_events(app, ref, "session.desktop_opened", count=2)
        assert [e.payload["data"]["input"] for e in opened] == [True, False]
        await tech.close()
    finally:
        await agent.stop()


async def test_view_only_grant_moves_nothing_and_starts_x11vnc_view_only(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient,
    live_url: str, display: Display,
) -> None:  # fmt: skip
    config = DesktopConfig.from_environment(display.env)
    agent = await desktop_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True]), config
    )
    try:
        sid = await _session(client, people, agent, ["view"])
        tech = await RfbClient.open(live_url, people["tech_token"], sid, "control")
        assert tech.ready["input"] is False
        ours = x11vnc_on(display.name)
        assert len(ours) == 1, ours
        assert "-viewonly" in ours[0]
        assert "-localhost" in ours[0]
        assert "-passwdfile rm:" in ours[0]  # the one-time password is not on the command line

        display.move(7, 7)
        await tech.pointer(300, 200, buttons=1)
        await tech.cut_text(b"secret paste")
        await _stream_passed(tech)
        assert display.pointer() == (7, 7), "a view-only session moved the pointer"

        # Ending the session closes the screen and stops the x11vnc the agent started.
        resp = await client.post(
            f"/api/v1/sessions/{sid}/end",
            headers={"Authorization": f"Bearer {people['tech_token']}"},
        )
        assert resp.status_code == 200, resp.text
        code, _ = await tech.closed()
        assert code == 4000
        await eventually(
            lambda: not x11vnc_on(display.name),
            what="x11vnc stopped",
        )
    finally:
        await agent.stop()


@pytest.fixture
def admins_server(display: Display, tmp_path: Any) -> Any:
    """A VNC server the admin runs on the device: one full-access password, no view-only
    one, so x11vnc itself accepts input from every connection; only the broker filters."""
    import socket
    import subprocess

    secret = tmp_path / "vnc-password"
    secret.write_text("adminpw1\n")
    secret.chmod(0o600)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        ["x11vnc", "-display", display.name, "-localhost", "-rfbport", str(port),
         "-passwdfile", str(secret), "-shared", "-forever", "-norc", "-noncache"],
        env=display.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:  # PORT=N once it listens
        if line.strip() == f"PORT={port}":
            break
    try:
        yield DesktopConfig.from_environment(
            display.env, mode="attach", port=port, password_file=secret
        )
    finally:
        process.terminate()
        # Nobody read its output since PORT=: a full pipe would hold it in a write on its
        # way out. Closing our end lets that write fail, so it ends.
        process.stdout.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def test_the_broker_drops_input_the_server_would_take(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient,
    live_url: str, display: Display, admins_server: DesktopConfig,
) -> None:  # fmt: skip
    """Against the admin's server (no view-only password) the filter is all that stands
    between a watcher or a view-only session and the pointer."""
    agent = await desktop_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True, True]),
        admins_server,
    )  # fmt: skip
    try:
        sid = await _session(client, people, agent, ["view", "control"])
        tech = await RfbClient.open(live_url, people["tech_token"], sid, "control")
        watcher = await RfbClient.open(live_url, people["admin_token"], sid, "watch")
        display.move(9, 9)
        await watcher.pointer(400, 222)
        await _stream_passed(watcher)
        assert display.pointer() == (9, 9), "the broker passed a watcher's pointer"
        await tech.pointer(401, 223)
        await eventually(lambda: display.pointer() == (401, 223), what="technician's pointer")
        for viewer in (tech, watcher):
            await viewer.close()

        view_only = await _session(client, people, agent, ["view"])
        tech = await RfbClient.open(live_url, people["tech_token"], view_only, "control")
        await tech.pointer(100, 100)
        await _stream_passed(tech)
        assert display.pointer() == (401, 223), "the broker passed a view-only pointer"
        await tech.close()
    finally:
        await agent.stop()


async def test_an_invited_expert_controls_only_when_the_grant_allows(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient,
    live_url: str, display: Display,
) -> None:  # fmt: skip
    from tests.factories import make_group, make_token, make_user
    from tests.ui.browsers import browser

    expert, _ = await make_user(app, "technician")
    group = await make_group(app, [people["tech"], expert])
    expert_token = await make_token(app, expert)
    technician = await browser(app, people["tech"])
    config = DesktopConfig.from_environment(display.env)
    agent = await desktop_agent(
        app, gateway, tmp_path, group.name, ScriptedPrompter([True, True]), config
    )
    try:
        for caps, moves in ((["view", "control"], True), (["view"], False)):
            sid = await _session(client, people, agent, caps)
            tech = await RfbClient.open(live_url, people["tech_token"], sid, "control")
            invited = await technician.post(
                f"/ui/sessions/{sid}/invite", {"expert_id": expert.id}, follow_redirects=False
            )
            assert invited.status_code == 303, invited.text
            helper = await RfbClient.open(live_url, expert_token, sid, "join")
            assert helper.ready["input"] is moves
            display.move(11, 11)
            await helper.pointer(500, 400)
            if moves:
                await eventually(lambda: display.pointer() == (500, 400), what="expert's pointer")
            else:
                await _stream_passed(helper)
                assert display.pointer() == (11, 11), "an expert moved a view-only screen"
            for viewer in (helper, tech):
                await viewer.close()
    finally:
        await agent.stop()


class _AnswerLater(ScriptedPrompter):
    """The user answers only when the test says so."""

    def __init__(self) -> None:
        super().__init__([True])
        self.release = asyncio.Event()

    async def ask(self, prompt: Any, wait_seconds: float) -> tuple[bool, str]:
        self.asked.set()
        await self.release.wait()
        return await super().ask(prompt, wait_seconds)


async def test_a_screen_opened_before_consent_starts_with_the_approval(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient,
    live_url: str, display: Display,
) -> None:  # fmt: skip
    """The technician's socket waits for the user; the device's approval attaches it (the
    desktop channel, and x11vnc's start, happen inside that approval)."""
    prompter = _AnswerLater()
    config = DesktopConfig.from_environment(display.env)
    agent = await desktop_agent(app, gateway, tmp_path, people["group"].name, prompter, config)
    try:
        created = await request_session(
            client, people["tech_token"], agent.device_id, ["view", "control"]
        )
        sid = created["id"]
        await asyncio.wait_for(prompter.asked.wait(), 30)
        opening = asyncio.create_task(
            RfbClient.open(live_url, people["tech_token"], sid, "control")
        )
        await eventually(lambda: gateway.waiting._by_session.get(sid), what="socket waiting")
        prompter.release.set()
        tech = await asyncio.wait_for(opening, 60)
        assert tech.ready["input"] is True
        await wait_state(client, people["tech_token"], sid, "active", timeout=30)
        display.move(1, 1)
        await tech.pointer(77, 88)
        await eventually(lambda: display.pointer() == (77, 88), what="pointer at 77,88")
        await tech.close()
    finally:
        await agent.stop()
