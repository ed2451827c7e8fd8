"""Push, not poll: a technician's socket opened before the user answers waits for the decision
and connects the moment it commits (the device's approval attaches it in its own commit); the
link's keep-alive follows its open sessions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from broker.gateway.cli import ticket
from broker.gateway.link import IDLE_KEEPALIVE_INTERVAL
from tests.factories import make_group, make_token
from tests.gateway.helpers import (
    ScriptedPrompter,
    echo_server,
    enrolled_agent,
    events,
    forward_uri,
    request_session,
    session_state,
    ticket_ref,
    wait_events,
    wait_state,
)


class GatedPrompter(ScriptedPrompter):
    """Answers only when the test releases the gate (the technician is waiting by then)."""

    def __init__(self, answer: bool) -> None:
        super().__init__()
        self.answer = answer
        self.gate = asyncio.Event()

    async def ask(self, prompt: Any, wait_seconds: float) -> tuple[bool, str]:
        self.prompts.append(prompt)
        self.asked.set()
        await self.gate.wait()
        return self.answer, "user" if self.answer else "declined"


async def test_forward_opened_before_consent_connects_on_approval(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
) -> None:
    echo, port = await echo_server()
    group = await make_group(app, [people["tech"]], allowed_ports=[port])
    prompter = GatedPrompter(True)
    agent = await enrolled_agent(app, gateway, tmp_path, group.name, prompter)
    token = people["tech_token"]
    try:
        session = await request_session(client, token, agent.device_id, ["forward"])
        sid = session["id"]
        await asyncio.wait_for(prompter.asked.wait(), 10)  # pushed to the device
        link = gateway.links[agent.device_id]
        async with asyncio.timeout(10):
            while not link.busy:  # an open session: probed every 10 s from now on
                await asyncio.sleep(0.05)
        uri = await forward_uri(live_url, token, sid, port)  # a ticket while awaiting consent
        async with websockets.connect(uri) as ws:
            await ws.send(b"early")  # held until the channel opens
            await asyncio.sleep(0.3)
            assert await session_state(client, token, sid) == "awaiting_consent"
            commits = gateway.signals.version  # bumped once per commit that writes sessions
            prompter.gate.set()
            assert await asyncio.wait_for(ws.recv(), 10) == b"early"
            # The receipt, the approval, the forward and the start share one commit.
            assert gateway.signals.version == commits + 1
            assert await session_state(client, token, sid) == "active"
        ref = await ticket_ref(app, sid)
        (opened,) = await wait_events(app, ref, "session.forward_opened")
        assert opened.payload["data"]["port"] == port
        (receipt,) = await events(app, ref, "consent.receipt")
        (approved,) = await events(app, ref, "session.approved")
        (active,) = await events(app, ref, "session.active")
        assert receipt.position < approved.position < opened.position < active.position
        resp = await client.post(
            f"/api/v1/sessions/{sid}/end", headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status_code == 200, resp.text
        async with asyncio.timeout(10):
            while link.busy:  # no open session left: back to the idle probe
                await asyncio.sleep(0.05)
        assert link.conn._keepalive_interval == IDLE_KEEPALIVE_INTERVAL
    finally:
        await agent.stop()
        echo.close()


async def test_refused_attach_leaves_the_device_approval_whole(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
) -> None:
    prompter = GatedPrompter(True)
    agent = await enrolled_agent(app, gateway, tmp_path, people["group"].name, prompter)
    token = people["tech_token"]
    reader = await make_token(app, people["tech"], scopes=["sessions:read"])
    try:
        session = await request_session(client, token, agent.device_id, ["shell"])
        sid = session["id"]
        await asyncio.wait_for(prompter.asked.wait(), 10)
        # A read-only token may take a ticket and wait, but not start the session.
        secret = await ticket(live_url, reader, sid, "control")
        uri = live_url.replace("http", "ws") + f"/api/v1/gateway/terminal?ticket={secret}"
        async with websockets.connect(uri) as ws:
            await asyncio.sleep(0.3)
            prompter.gate.set()
            refusal = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert refusal["error"] == "forbidden"
        # The attach rolled back to its savepoint: the user's signed consent still stands.
        assert await session_state(client, token, sid) == "approved"
        ref = await ticket_ref(app, sid)
        assert len(await events(app, ref, "consent.receipt")) == 1
        assert len(await events(app, ref, "session.approved")) == 1
        assert await events(app, ref, "session.active") == []
        assert gateway.waiting.claim(sid) == []  # nothing left waiting
    finally:
        await agent.stop()


async def test_socket_waiting_for_consent_is_refused_on_denial(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
) -> None:
    prompter = GatedPrompter(False)
    agent = await enrolled_agent(app, gateway, tmp_path, people["group"].name, prompter)
    token = people["tech_token"]
    try:
        session = await request_session(client, token, agent.device_id, ["shell"])
        await asyncio.wait_for(prompter.asked.wait(), 10)
        secret = await ticket(live_url, token, session["id"], "control")
        uri = live_url.replace("http", "ws") + f"/api/v1/gateway/terminal?ticket={secret}"
        async with websockets.connect(uri) as ws:
            await asyncio.sleep(0.2)
            prompter.gate.set()
            refusal = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert refusal["error"] == "illegal_transition"
            assert "denied" in refusal["detail"]
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
        await wait_state(client, token, session["id"], "denied")
        ref = await ticket_ref(app, session["id"])
        assert await events(app, ref, "session.active") == []
    finally:
        await agent.stop()


async def test_only_the_technician_may_wait_for_consent(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
) -> None:
    prompter = GatedPrompter(True)
    agent = await enrolled_agent(app, gateway, tmp_path, people["group"].name, prompter)
    try:
        session = await request_session(client, people["tech_token"], agent.device_id, ["shell"])
        resp = await client.post(
            f"/api/v1/gateway/sessions/{session['id']}/terminal-ticket",
            json={"mode": "watch"},
            headers={"Authorization": f"Bearer {people['admin_token']}"},
        )
        assert resp.status_code == 409, resp.text
        assert "awaiting_consent" in resp.json()["detail"]
    finally:
        prompter.gate.set()
        await agent.stop()
