"""``supportbroker connect`` says where it is and, at the end, who ended the session and why.

The real command (a process, the technician's API token) against the broker on loopback and
a real agent: stderr carries "connected to <device> for <ticket> — recorded" once the shell is
there, and on disconnect the session's end (who, why) or, if the session still runs, why
this terminal closed; stdout carries only the terminal's bytes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.factories import consent_token
from tests.gateway.helpers import ScriptedPrompter, enrolled_agent, request_session, wait_state

CLI = shutil.which("supportbroker", path=str(Path(sys.executable).parent)) or "supportbroker"


async def _connect(live_url: str, token: str, session_id: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        CLI,
        "connect",
        session_id,
        "--url",
        live_url,
        env={**os.environ, "SUPPORTBROKER_TOKEN": token},
        stdin=asyncio.subprocess.PIPE,  # the technician's keyboard (not a terminal here)
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _read_until(stream: Any, needle: bytes, timeout: float = 20.0) -> bytes:
    seen = b""
    async with asyncio.timeout(timeout):
        while needle not in seen:
            chunk = await stream.read(4096)
            if not chunk:
                raise AssertionError(f"stream ended before {needle!r}: {seen!r}")
            seen += chunk
    return seen


async def test_connect_banner_and_who_ended_the_session(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
) -> None:
    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True])
    )
    token = people["tech_token"]
    proc = None
    try:
        created = await request_session(client, token, agent.device_id, ["shell"])
        sid, device = created["id"], created["device"]["name"]
        ticket = created["ticket"]["external_id"]
        await wait_state(client, token, sid, "approved")
        proc = await _connect(live_url, token, sid)
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        banner = await _read_until(proc.stderr, b"recorded")
        assert f"connected to {device} for {ticket} — recorded".encode() in banner
        proc.stdin.write(b"echo banner-$((6*7))\n")
        await proc.stdin.drain()
        await _read_until(proc.stdout, b"banner-42")
        # The end user ends it from the consent page.
        revoked = await client.post(
            f"/api/v1/consent/{consent_token(created)}/revoke", json={"name": "Erika"}
        )
        assert revoked.status_code == 200, revoked.text
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        said = (await proc.stderr.read()).decode()
        assert (
            f"disconnected from {device} for {ticket}: the session was revoked"
            " — revoked by the end user (by Erika)"
        ) in said
        assert b"[supportbroker]" not in await proc.stdout.read()  # banners stay off stdout
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await agent.stop()


async def test_a_closed_shell_leaves_the_session_running_and_says_so(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, live_url: str
) -> None:
    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True])
    )
    token = people["tech_token"]
    proc = None
    try:
        created = await request_session(client, token, agent.device_id, ["shell"])
        sid, device = created["id"], created["device"]["name"]
        await wait_state(client, token, sid, "approved")
        proc = await _connect(live_url, token, sid)
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        await _read_until(proc.stderr, b"connected to")
        proc.stdin.write(b"exit\n")  # the technician leaves the shell
        await proc.stdin.drain()
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        said = (await proc.stderr.read()).decode()
        assert f"disconnected from {device} for " in said
        assert "shell exited; the session is still active" in said
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await agent.stop()
