"""A refused channel is never recorded as an opened one.

Through the technician's sockets (real agent, real gateway, real WebSockets): a forward to a
port the group does not allow, a forward the device's agent refuses by itself (its policy is
older than the broker's), a forward without the forward right, a shell on a session approved
only for files. Each ends with the error on the socket (JSON frame, close 4403 with the
reason), ``session.channel_refused`` sealed, no ``session.forward_opened``, no start (the
session stays ``approved``) and no recording; the same session then opens what it may.
``supportbroker connect`` prints the refusal, exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from typing import Any

import httpx
import pytest
import websockets

from broker.devices.models import DeviceGroup
from broker.gateway import cli
from tests.factories import make_group
from tests.gateway.helpers import (
    ScriptedPrompter,
    echo_server,
    enrolled_agent,
    events,
    forward_uri,
    read_until,
    recordings,
    request_session,
    session_state,
    terminal_uri,
    ticket_ref,
    wait_state,
)


async def _refusal(uri: str) -> tuple[dict[str, Any], int, str]:
    """The error frame, close code and close reason a refused socket gets."""
    async with websockets.connect(uri) as ws:
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    return error, closed.value.rcvd.code, closed.value.rcvd.reason


async def _echoed(uri: str) -> None:
    async with websockets.connect(uri) as ws:
        await ws.send(b"ping")
        assert await asyncio.wait_for(ws.recv(), 10) == b"ping"


async def _nothing_started(app: Any, client: httpx.AsyncClient, token: str, sid: str) -> str:
    assert await session_state(client, token, sid) == "approved"
    ref = await ticket_ref(app, sid)
    assert await events(app, ref, "session.forward_opened") == []
    assert await events(app, ref, "session.active") == []
    return ref


async def test_forward_to_a_port_the_group_does_not_allow(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
) -> None:
    echo, allowed = await echo_server()
    other, not_allowed = await echo_server()  # listening: only a refusal keeps the bytes out
    group = await make_group(app, [people["tech"]], allowed_ports=[allowed])
    agent = await enrolled_agent(app, gateway, tmp_path, group.name, ScriptedPrompter([True]))
    token = people["tech_token"]
    try:
        sid = (await request_session(client, token, agent.device_id, ["forward"]))["id"]
        await wait_state(client, token, sid, "approved")
        error, code, reason = await _refusal(await forward_uri(live_url, token, sid, not_allowed))
        assert error["error"] == "policy_denied"
        assert f"port {not_allowed} is not allowed" in error["detail"]
        assert code == 4403
        assert f"port {not_allowed}" in reason
        ref = await _nothing_started(app, client, token, sid)
        (refused,) = await events(app, ref, "session.channel_refused")
        assert refused.payload["data"] == {
            "session_id": sid,
            "channel": "forward",
            "port": not_allowed,
            "refused_by": "broker",
            "why": error["detail"],
        }
        assert refused.payload["actor"]["kind"] == "token"  # the technician's API token
        assert refused.payload["actor"]["role"] == "technician"
        # The refusal left the session whole: the allowed port opens and starts it.
        await _echoed(await forward_uri(live_url, token, sid, allowed))
        assert await session_state(client, token, sid) == "active"
        (opened,) = await events(app, ref, "session.forward_opened")
        assert opened.payload["data"]["port"] == allowed
    finally:
        await agent.stop()
        echo.close()
        other.close()


async def test_forward_the_agent_refuses_by_itself(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
) -> None:
    """The broker's group now allows the port; the agent still holds the policy it was given
    at connect, which does not: the agent's own check refuses, and that is what is sealed."""
    echo, port = await echo_server()
    group = await make_group(app, [people["tech"]], allowed_ports=[])
    prompter = ScriptedPrompter([True])
    agent = await enrolled_agent(app, gateway, tmp_path, group.name, prompter)
    token = people["tech_token"]
    try:
        async with app.state.sessionmaker() as db:
            row = await db.get(DeviceGroup, group.id)
            assert row is not None
            row.allowed_ports = [port]  # the agent learns this only when it reconnects
            await db.commit()
        sid = (await request_session(client, token, agent.device_id, ["forward"]))["id"]
        await wait_state(client, token, sid, "approved")
        error, code, _ = await _refusal(await forward_uri(live_url, token, sid, port))
        assert error["error"] == "policy_denied"
        assert "the agent on the device refused the forward" in error["detail"]
        assert code == 4403
        assert any(f"port {port} is not allowed" in n for n in prompter.notices)
        ref = await _nothing_started(app, client, token, sid)
        (refused,) = await events(app, ref, "session.channel_refused")
        assert refused.payload["data"]["refused_by"] == "agent"
        assert refused.payload["data"]["port"] == port
    finally:
        await agent.stop()
        echo.close()


async def test_forward_without_the_forward_right(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
) -> None:
    echo, port = await echo_server()
    group = await make_group(app, [people["tech"]], allowed_ports=[port])
    agent = await enrolled_agent(app, gateway, tmp_path, group.name, ScriptedPrompter([True]))
    token = people["tech_token"]
    try:
        caps = ["files", "shell"]  # everything but the forward right
        sid = (await request_session(client, token, agent.device_id, caps))["id"]
        await wait_state(client, token, sid, "approved")
        error, code, _ = await _refusal(await forward_uri(live_url, token, sid, port))
        assert "not approved for port forwards" in error["detail"]
        assert code == 4403
        ref = await _nothing_started(app, client, token, sid)
        assert len(await events(app, ref, "session.channel_refused")) == 1
    finally:
        await agent.stop()
        echo.close()


async def test_shell_on_a_session_without_the_shell_right(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
) -> None:
    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True])
    )
    token = people["tech_token"]
    try:
        sid = (await request_session(client, token, agent.device_id, ["files"]))["id"]
        await wait_state(client, token, sid, "approved")
        error, code, reason = await _refusal(await terminal_uri(live_url, token, sid))
        assert error["error"] == "policy_denied"
        assert "not approved for a shell" in error["detail"]
        assert (code, reason) == (4403, error["detail"])
        ref = await _nothing_started(app, client, token, sid)
        (refused,) = await events(app, ref, "session.channel_refused")
        assert refused.payload["data"]["channel"] == "shell"
        assert "port" not in refused.payload["data"]
        assert await recordings(app, sid) == []  # no shell, no recording
        assert agent.device_id not in gateway.links or not gateway.links[agent.device_id].relays
    finally:
        await agent.stop()


async def test_shell_approved_runs_after_nothing_was_refused(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
) -> None:
    """The counterpart: a shell session's terminal opens, starts the session, no refusal."""
    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True])
    )
    token = people["tech_token"]
    try:
        sid = (await request_session(client, token, agent.device_id, ["shell"]))["id"]
        await wait_state(client, token, sid, "approved")
        async with websockets.connect(await terminal_uri(live_url, token, sid)) as ws:
            await ws.send(b"echo shell-$((20+22))\n")
            await read_until(ws, b"shell-42")
        assert await session_state(client, token, sid) == "active"
        assert await events(app, await ticket_ref(app, sid), "session.channel_refused") == []
    finally:
        await agent.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_cli_forward_prints_the_refusal_and_exits_1(
    app: Any,
    gateway: Any,
    people: Any,
    tmp_path: Any,
    client: httpx.AsyncClient,
    live_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    group = await make_group(app, [people["tech"]], allowed_ports=[5900])
    agent = await enrolled_agent(app, gateway, tmp_path, group.name, ScriptedPrompter([True]))
    token = people["tech_token"]
    try:
        sid = (await request_session(client, token, agent.device_id, ["forward"]))["id"]
        await wait_state(client, token, sid, "approved")
        local = _free_port()
        args = argparse.Namespace(
            session_id=sid, url=live_url, token=token, mode="control", forward=f"{local}:22"
        )
        running = asyncio.create_task(cli._connect(args))
        async with asyncio.timeout(10):
            while True:  # the local port opens, then the first connection is refused
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", local)
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        assert await asyncio.wait_for(running, 10) == 1
        writer.close()
        err = capsys.readouterr().err
        assert "supportbroker: error: port 22 is not allowed" in err
        await _nothing_started(app, client, token, sid)
    finally:
        await agent.stop()


async def test_cli_terminal_prints_the_refusal_and_exits_1(
    app: Any,
    gateway: Any,
    people: Any,
    tmp_path: Any,
    client: httpx.AsyncClient,
    live_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True])
    )
    token = people["tech_token"]
    read_end, write_end = os.pipe()  # the technician's keyboard: not a terminal
    monkeypatch.setattr(sys, "stdin", os.fdopen(read_end))
    try:
        sid = (await request_session(client, token, agent.device_id, ["files"]))["id"]
        await wait_state(client, token, sid, "approved")
        args = argparse.Namespace(
            session_id=sid, url=live_url, token=token, mode="control", forward=None
        )
        assert await asyncio.wait_for(cli._connect(args), 10) == 1
        err = capsys.readouterr().err
        assert "supportbroker: error: the session was not approved for a shell" in err
    finally:
        os.close(write_end)
        sys.stdin.close()
        await agent.stop()
