"""The full path through the real gateway: request → agent prompt → approve → shell over the
terminal WebSocket → recording; and deny, time-out, revoke from the agent, kill from the broker.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import websockets

from audit.bundle import verify_bundle
from broker.gateway.cli import ticket
from broker.sessions import service as sessions
from tests.gateway.helpers import (
    ScriptedPrompter,
    cast_output,
    drain,
    enrolled_agent,
    events,
    read_cast,
    read_until,
    recording_text,
    recordings,
    request_session,
    session_state,
    wait_state,
)


async def test_full_path_shell_and_recording(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
):
    prompter = ScriptedPrompter([True])
    agent = await enrolled_agent(app, gateway, tmp_path, people["group"].name, prompter)
    try:
        session = await request_session(client, people["tech_token"], agent.device_id, ["shell"])
        await wait_state(client, people["tech_token"], session["id"], "approved")
        shown = prompter.prompts[0]
        assert shown.technician == people["tech"].display_name
        assert shown.reason == "printer driver keeps crashing"
        assert shown.capabilities == ("shell",)
        assert shown.subject == "Printer offline"

        secret = await ticket(live_url, people["tech_token"], session["id"], "control")
        uri = live_url.replace("http", "ws") + f"/api/v1/gateway/terminal?ticket={secret}"
        async with websockets.connect(uri) as ws:
            await ws.send(json.dumps({"type": "input", "data": "echo sb-$((6*7))-ok\n"}))
            out = await read_until(ws, b"sb-42-ok")
            assert b"sb-42-ok" in out
            assert await session_state(client, people["tech_token"], session["id"]) == "active"
            # Sealed while the session runs (idle flush), not only at the end.
            assert "sb-42-ok" in await recording_text(app, session["id"], "sb-42-ok")
            resp = await client.post(
                f"/api/v1/sessions/{session['id']}/end",
                headers={"Authorization": f"Bearer {people['tech_token']}"},
            )
            assert resp.status_code == 200, resp.text
            out += await drain(ws)  # the poller withdraws the session: the socket closes
        cast = await _sealed_cast(app, session["id"])
        assert cast.complete, cast.problem
        assert cast_output(cast.text) == out.decode("utf-8", "replace")
        async with app.state.sessionmaker() as db:
            record, _ = await sessions.load(db, session["id"])
            ref = record.ticket.ref
            bundle = await app.state.audit_log.export_bundle(
                await db.connection(), ref, include_plaintext=False
            )
        report = verify_bundle(bundle, app.state.audit_log.signer.verifier)
        assert report.ok, report.problem
        assert len(await events(app, ref, "recording.ended")) == 1
    finally:
        await agent.stop()


async def _sealed_cast(app: Any, session_id: str, timeout: float = 10.0) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            found = await recordings(app, session_id)
            if found and found[-1].ended_at is not None:
                return await read_cast(app, session_id)
            await asyncio.sleep(0.1)


async def test_deny_on_device(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
):
    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([False])
    )
    try:
        session = await request_session(client, people["tech_token"], agent.device_id, ["shell"])
        await wait_state(client, people["tech_token"], session["id"], "denied")
    finally:
        await agent.stop()


async def test_no_answer_times_out_as_denial(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
):
    prompter = ScriptedPrompter([None])  # never answers; the agent's timeout is 1 s
    agent = await enrolled_agent(app, gateway, tmp_path, people["group"].name, prompter)
    try:
        session = await request_session(client, people["tech_token"], agent.device_id, ["shell"])
        await wait_state(client, people["tech_token"], session["id"], "denied")
    finally:
        await agent.stop()


async def test_revoke_from_agent(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
):
    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True])
    )
    try:
        session = await request_session(client, people["tech_token"], agent.device_id, ["shell"])
        await wait_state(client, people["tech_token"], session["id"], "approved")
        await agent.core.end_all()  # the local user typed "end"
        await wait_state(client, people["tech_token"], session["id"], "revoked")
        assert agent.core.grants.active() == []
    finally:
        await agent.stop()


async def test_kill_from_broker_closes_the_shell(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
):
    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True])
    )
    try:
        session = await request_session(client, people["tech_token"], agent.device_id, ["shell"])
        await wait_state(client, people["tech_token"], session["id"], "approved")
        secret = await ticket(live_url, people["tech_token"], session["id"], "control")
        uri = live_url.replace("http", "ws") + f"/api/v1/gateway/terminal?ticket={secret}"
        async with websockets.connect(uri) as ws:
            await ws.send(json.dumps({"type": "input", "data": "echo up\n"}))
            await read_until(ws, b"up")
            resp = await client.post(
                f"/api/v1/sessions/{session['id']}/revoke",
                headers={"Authorization": f"Bearer {people['admin_token']}"},
            )
            assert resp.status_code == 200, resp.text
            async with asyncio.timeout(10):  # the poller withdraws it: the socket closes
                try:
                    while True:
                        await ws.recv()
                except websockets.ConnectionClosed:
                    pass
        for _ in range(50):
            if not agent.core.grants.active():
                break
            await asyncio.sleep(0.1)
        assert agent.core.grants.active() == []
        assert await session_state(client, people["tech_token"], session["id"]) == "revoked"
    finally:
        await agent.stop()
