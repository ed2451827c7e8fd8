"""The agent process is SIGKILLed mid-session with a terminal open: the session fails (well
within 30 s) with an event, the recording is sealed whole with what the technician saw, and a
restarted agent reconnects."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

import httpx
import websockets

from agent.runner import enroll
from tests.gateway.helpers import (
    ScriptedPrompter,
    agent_settings,
    cast_output,
    drain,
    new_token,
    read_cast,
    read_until,
    request_session,
    terminal_uri,
    ticket_ref,
    wait_events,
    wait_state,
)


async def _spawn(settings: Any) -> asyncio.subprocess.Process:
    env = dict(
        os.environ,
        SUPPORTBROKER_AGENT_CONFIG_DIR=str(settings.config_dir),
        SUPPORTBROKER_AGENT_NOTIFY="false",
        SUPPORTBROKER_AGENT_CONSENT_PROMPT="terminal",  # the test answers on the pipe
        SUPPORTBROKER_AGENT_BACKOFF_INITIAL="0.1",
        SUPPORTBROKER_AGENT_BACKOFF_MAX="0.5",
    )
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.cli",
        "run",
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,  # the consent prompt is read from here
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _until(predicate: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def approved_shell(
    proc: asyncio.subprocess.Process,
    gateway: Any,
    client: httpx.AsyncClient,
    token: str,
    device_id: str,
) -> dict[str, Any]:
    """Once the spawned agent is linked: a shell session, approved at its terminal prompt."""
    await _until(lambda: device_id in gateway.links)
    session = await request_session(client, token, device_id, ["shell"])
    assert proc.stdin is not None
    assert proc.stdout is not None
    # Answer only once the prompt is on the agent's terminal (an earlier line is no answer).
    await asyncio.wait_for(proc.stdout.readuntil(b"Allow? [y/N] "), 15)
    proc.stdin.write(b"y\n")
    await proc.stdin.drain()
    await wait_state(client, token, session["id"], "approved")
    return session


async def test_killed_agent_fails_session_and_reconnects(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
):
    settings = agent_settings(tmp_path)
    await enroll(
        settings,
        f"127.0.0.1:{gateway.port}",
        await new_token(app, people["group"].name),
        ScriptedPrompter(),
    )
    from agent.config import load_enrollment

    device_id = load_enrollment(settings).device_id
    proc = await _spawn(settings)
    try:
        session = await approved_shell(proc, gateway, client, people["tech_token"], device_id)
        link = gateway.links[device_id]
        uri = await terminal_uri(live_url, people["tech_token"], session["id"])
        async with websockets.connect(uri) as ws:
            await ws.send(json.dumps({"type": "input", "data": "echo before-$((3*3))\n"}))
            shown = await read_until(ws, b"before-9")
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            started = asyncio.get_running_loop().time()
            shown += await drain(ws, timeout=30)
        await wait_state(client, people["tech_token"], session["id"], "failed", timeout=30)
        assert asyncio.get_running_loop().time() - started < 30
        await _until(lambda: gateway.links.get(device_id) is not link)
        ref = await ticket_ref(app, session["id"])
        (failed,) = await wait_events(app, ref, "session.failed")
        assert "agent" in json.dumps(failed.payload)
        (ended,) = await wait_events(app, ref, "recording.ended")
        assert "agent" in ended.payload["reason"]
        cast = await read_cast(app, session["id"])
        assert cast.complete, cast.problem
        assert cast_output(cast.text) == shown.decode("utf-8", "replace")
        assert "before-9" in cast_output(cast.text)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    again = await _spawn(settings)
    try:
        await _until(lambda: device_id in gateway.links)
    finally:
        again.kill()
        await again.wait()
