"""Desktops that cannot be shown, said in words that reach the technician.

At request time from what the agent reported in its hello (no display, Wayland); at channel
time from the agent's stderr (a display x11vnc cannot open); a session without a screen
right is refused by the broker; a viewer that sends what the filter cannot pass is cut off;
on macOS and Windows the agent names the desktop rights it cannot give and keeps the others.
"""

from __future__ import annotations

import sys
from typing import Any

import httpx
import pytest

from agent.desktop import DesktopConfig, unavailable_rights
from tests.desktop.conftest import Display
from tests.desktop.helpers import desktop_agent
from tests.desktop.rfbclient import Refused, RfbClient
from tests.gateway.helpers import (
    ScriptedPrompter,
    events,
    request_session,
    session_state,
    ticket_ref,
    wait_events,
    wait_state,
)

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _body(people: Any, device_id: str, caps: list[str]) -> dict[str, Any]:
    return {
        "ticket": {"system": "standalone", "external_id": "HD-77", "subject": "Screen"},
        "device_id": device_id,
        "reason": "the user cannot find the printer dialog",
        "capabilities": caps,
        "duration_minutes": 30,
    }


@SQLITE
@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({}, "no X display"),
        ({"DISPLAY": ":0", "XDG_SESSION_TYPE": "wayland"}, "Wayland"),
        ({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}, "Wayland"),
    ],
)
async def test_a_device_without_an_x_display_is_refused_the_screen_at_request(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient,
    environ: dict[str, str], words: str,
) -> None:  # fmt: skip
    config = DesktopConfig.from_environment(environ)
    agent = await desktop_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True]), config
    )
    try:
        auth = {"Authorization": f"Bearer {people['tech_token']}"}
        resp = await client.post(
            "/api/v1/sessions", json=_body(people, agent.device_id, ["view"]), headers=auth
        )
        assert resp.status_code == 403, resp.text
        assert words in resp.json()["detail"]
        assert "cannot give view" in resp.json()["detail"]
        device = await client.get(f"/api/v1/devices/{agent.device_id}", headers=auth)
        assert words in device.json()["unavailable"]["view"]
        denied = await events(app, "standalone:HD-77", "policy.denied")
        assert denied[-1].payload["data"]["rule"] == "capability_unavailable"
        # The rights it can give are still asked for as usual.
        resp = await client.post(
            "/api/v1/sessions", json=_body(people, agent.device_id, ["shell"]), headers=auth
        )
        assert resp.status_code == 201, resp.text
    finally:
        await agent.stop()


@SQLITE
async def test_a_display_x11vnc_cannot_open_is_refused_with_its_reason(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient,
    live_url: str,
) -> None:  # fmt: skip
    config = DesktopConfig.from_environment({"DISPLAY": ":4242", "XDG_SESSION_TYPE": "x11"})
    agent = await desktop_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True]), config
    )
    try:
        created = await request_session(
            client, people["tech_token"], agent.device_id, ["view", "control"]
        )
        sid = created["id"]
        await wait_state(client, people["tech_token"], sid, "approved", timeout=30)
        with pytest.raises(Refused, match="x11vnc could not share display :4242"):
            await RfbClient.open(live_url, people["tech_token"], sid, "control")
        assert await session_state(client, people["tech_token"], sid) == "approved"
        refused = await wait_events(app, await ticket_ref(app, sid), "session.channel_refused")
        assert refused[0].payload["data"]["refused_by"] == "agent"
        assert refused[0].payload["data"]["channel"] == "desktop"
    finally:
        await agent.stop()


@SQLITE
async def test_no_screen_right_no_screen_and_a_violation_ends_the_connection(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient,
    live_url: str, display: Display,
) -> None:  # fmt: skip
    config = DesktopConfig.from_environment(display.env)
    agent = await desktop_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True, True]), config
    )
    try:
        shell_only = (
            await request_session(client, people["tech_token"], agent.device_id, ["shell"])
        )["id"]
        await wait_state(client, people["tech_token"], shell_only, "approved", timeout=30)
        with pytest.raises(Refused, match="not approved for the screen"):
            await RfbClient.open(live_url, people["tech_token"], shell_only, "control")

        sid = (await request_session(client, people["tech_token"], agent.device_id, ["view"]))["id"]
        await wait_state(client, people["tech_token"], sid, "approved", timeout=30)
        viewer = await RfbClient.open(live_url, people["tech_token"], sid, "control")
        await viewer.send(b"\xfa\x00\x01\x03")  # xvp "reboot": never enabled, never passed
        code, reason = await viewer.closed()
        assert code == 4400
        assert "unknown client message type 250" in reason
        closed = await wait_events(app, await ticket_ref(app, sid), "session.desktop_closed")
        assert closed[0].payload["data"]["violation"] == "unknown client message type 250"
    finally:
        await agent.stop()


@pytest.mark.parametrize("platform", ["darwin", "win32"])
def test_macos_and_windows_refuse_the_screen_and_keep_the_rest(
    monkeypatch: pytest.MonkeyPatch, platform: str
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    missing = unavailable_rights(DesktopConfig(display=":0"))
    system = "macOS" if platform == "darwin" else "Windows"
    assert f"cannot share the screen on {system}" in missing["view"]
    assert "files" not in missing
    assert ("shell" in missing) is (platform == "win32")  # the shell works on macOS
