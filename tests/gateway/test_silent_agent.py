"""A silent network cut: the agent process is SIGSTOPped mid-session, so its TCP connection
stays open but nothing answers (no FIN, no reply to the gateway's keepalive probes), as when a
cable is pulled or a NAT forgets the flow. The gateway's keepalive on a link with an open
session must notice, fail the session with an event and seal the recording; once the agent
runs again it finds its link gone and dials back.

The probe interval is shortened for the test (the product's is 10 s x 2 misses, so failed
within 30 s); the mechanism is the same, only the clock is faster.
"""

from __future__ import annotations

import json
import signal
from typing import Any

import httpx
import pytest
import websockets

from agent.config import load_enrollment
from agent.runner import enroll
from broker.gateway import link as links
from broker.gateway import server
from tests.gateway.helpers import (
    ScriptedPrompter,
    agent_settings,
    cast_output,
    drain,
    new_token,
    read_cast,
    read_until,
    terminal_uri,
    ticket_ref,
    wait_events,
    wait_state,
)
from tests.gateway.test_lost_agent import _spawn, _until, approved_shell

PROBE_SECONDS = 1.0


async def test_silent_agent_fails_session_by_keepalive_and_reconnects(
    app: Any,
    gateway: Any,
    people: Any,
    tmp_path: Any,
    client: httpx.AsyncClient,
    live_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(links, "KEEPALIVE_INTERVAL", PROBE_SECONDS)
    settings = agent_settings(tmp_path)
    await enroll(
        settings,
        f"127.0.0.1:{gateway.port}",
        await new_token(app, people["group"].name),
        ScriptedPrompter(),
    )
    device_id = load_enrollment(settings).device_id
    proc = await _spawn(settings)
    stopped = False
    try:
        session = await approved_shell(proc, gateway, client, people["tech_token"], device_id)
        link = gateway.links[device_id]
        uri = await terminal_uri(live_url, people["tech_token"], session["id"])
        async with websockets.connect(uri) as ws:
            await ws.send(json.dumps({"type": "input", "data": "echo before-$((4*4))\n"}))
            shown = await read_until(ws, b"before-16")
            assert link.busy  # an open session: the link is probed at the short interval
            proc.send_signal(signal.SIGSTOP)
            stopped = True
            shown += await drain(ws, timeout=30)  # ends when the gateway drops the link
        await wait_state(client, people["tech_token"], session["id"], "failed", timeout=30)
        ref = await ticket_ref(app, session["id"])
        (failed,) = await wait_events(app, ref, "session.failed")
        assert server.LOST_REASON in json.dumps(failed.payload)
        (ended,) = await wait_events(app, ref, "recording.ended")
        assert "agent" in ended.payload["reason"]
        cast = await read_cast(app, session["id"])
        assert cast.complete, cast.problem
        assert cast_output(cast.text) == shown.decode("utf-8", "replace")
        assert gateway.links.get(device_id) is not link
        proc.send_signal(signal.SIGCONT)  # the agent wakes up to a dead link and dials back
        stopped = False
        await _until(lambda: gateway.links.get(device_id) not in (None, link), timeout=30)
    finally:
        if stopped:
            proc.send_signal(signal.SIGCONT)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
