"""Approval on the web consent page while the technician's socket already waits.

The page's commit wakes both the waiting socket and the gateway's poller, which tells the
agent (``approved_remotely``). The agent refuses a channel for a session it has not been told
is approved, so the socket must not open its channel before the agent holds the grant: it
waits for the agent's ``granted`` reply. The grant's message is held back here for a moment,
so a socket that raced ahead would be refused every time, not now and then.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import websockets

from broker.gateway.cli import ticket, ws_url
from tests.factories import consent_token, make_group
from tests.gateway.helpers import (
    echo_server,
    enrolled_agent,
    events,
    read_until,
    request_session,
    session_state,
    terminal_uri,
    ticket_ref,
    wait_events,
)
from tests.gateway.test_push import GatedPrompter

HOLD_SECONDS = 0.5


def _hold_grants(gateway: Any, device_id: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Deliver the link's ``approved_remotely`` messages late; returns the kinds sent."""
    link = gateway.links[device_id]
    send = link.send
    sent: list[str] = []

    def late(msg: dict[str, Any]) -> None:
        sent.append(str(msg.get("type")))
        if msg.get("type") == "approved_remotely":
            asyncio.get_running_loop().call_later(HOLD_SECONDS, send, msg)
        else:
            send(msg)

    monkeypatch.setattr(link, "send", late)
    return sent


async def _approve_on_the_web(client: httpx.AsyncClient, created: dict[str, Any]) -> None:
    resp = await client.post(
        f"/api/v1/consent/{consent_token(created)}/decision",
        json={"decision": "approve", "name": "Erika M."},
    )
    assert resp.status_code == 200, resp.text


async def test_waiting_forward_opens_after_a_web_approval(
    app: Any,
    gateway: Any,
    people: Any,
    tmp_path: Any,
    client: httpx.AsyncClient,
    live_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    echo, port = await echo_server()
    group = await make_group(app, [people["tech"]], allowed_ports=[port])
    prompter = GatedPrompter(True)  # the user at the device never answers the prompt
    agent = await enrolled_agent(app, gateway, tmp_path, group.name, prompter)
    token = people["tech_token"]
    try:
        created = await request_session(client, token, agent.device_id, ["forward"])
        sid = created["id"]
        await asyncio.wait_for(prompter.asked.wait(), 10)
        sent = _hold_grants(gateway, agent.device_id, monkeypatch)
        secret = await ticket(live_url, token, sid, "control")
        uri = ws_url(live_url, f"/api/v1/gateway/forward?ticket={secret}&port={port}")
        async with websockets.connect(uri) as ws:
            await ws.send(b"early")  # held until the channel opens
            await asyncio.sleep(0.3)  # the socket is waiting for consent by now
            await _approve_on_the_web(client, created)
            assert await asyncio.wait_for(ws.recv(), 10) == b"early"
            assert await session_state(client, token, sid) == "active"
        assert "approved_remotely" in sent
        assert any("approved on the web by" in n for n in prompter.notices)
        assert not any("refused" in n for n in prompter.notices)
        ref = await ticket_ref(app, sid)
        (opened,) = await wait_events(app, ref, "session.forward_opened")
        assert opened.payload["data"]["port"] == port
        assert await events(app, ref, "session.channel_refused") == []
    finally:
        prompter.gate.set()
        await agent.stop()
        echo.close()


async def test_waiting_terminal_opens_after_a_web_approval(
    app: Any,
    gateway: Any,
    people: Any,
    tmp_path: Any,
    client: httpx.AsyncClient,
    live_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prompter = GatedPrompter(True)
    agent = await enrolled_agent(app, gateway, tmp_path, people["group"].name, prompter)
    token = people["tech_token"]
    try:
        created = await request_session(client, token, agent.device_id, ["shell"])
        sid = created["id"]
        await asyncio.wait_for(prompter.asked.wait(), 10)
        _hold_grants(gateway, agent.device_id, monkeypatch)
        async with websockets.connect(await terminal_uri(live_url, token, sid)) as ws:
            await asyncio.sleep(0.3)
            await _approve_on_the_web(client, created)
            await ws.send(b"echo web-$((6*7))\n")
            await read_until(ws, b"web-42")
        assert await session_state(client, token, sid) == "active"
        assert not any("refused" in n for n in prompter.notices)
        assert await events(app, await ticket_ref(app, sid), "session.channel_refused") == []
    finally:
        prompter.gate.set()
        await agent.stop()


async def test_a_grant_the_agent_never_confirms_is_not_opened(
    app: Any,
    gateway: Any,
    people: Any,
    tmp_path: Any,
    client: httpx.AsyncClient,
    live_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the agent's ``granted`` the socket gives up with an error, opens nothing."""
    monkeypatch.setattr("broker.gateway.link.GRANT_SECONDS", 0.5)
    prompter = GatedPrompter(True)
    agent = await enrolled_agent(app, gateway, tmp_path, people["group"].name, prompter)
    token = people["tech_token"]
    link = gateway.links[agent.device_id]
    send = link.send
    monkeypatch.setattr(
        link, "send", lambda msg: None if msg.get("type") == "approved_remotely" else send(msg)
    )
    try:
        created = await request_session(client, token, agent.device_id, ["shell"])
        sid = created["id"]
        await asyncio.wait_for(prompter.asked.wait(), 10)
        async with websockets.connect(await terminal_uri(live_url, token, sid)) as ws:
            await asyncio.sleep(0.2)
            await _approve_on_the_web(client, created)
            frame = await asyncio.wait_for(ws.recv(), 10)
        assert "did not confirm the approval" in str(frame)
        assert await session_state(client, token, sid) == "approved"
        assert not any("refused" in n for n in prompter.notices)  # nothing was even asked
    finally:
        prompter.gate.set()
        await agent.stop()
