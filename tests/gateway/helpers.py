"""Test helpers for the gateway: a scripted prompter, enrolled agents, sessions through the API.

The agent runs in-process against the real gateway on loopback (real asyncssh both ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path
from typing import Any

import httpx

from agent.config import AgentSettings, load_enrollment
from agent.consent import ConsentPrompt
from agent.identity import load_or_create_key
from agent.runner import RunHandle, enroll, run
from agent.server import AgentCore
from broker.evidence.service import Actor
from broker.gateway import cli as gateway_cli
from broker.gateway.server import Gateway
from broker.gateway.service import create_enrollment_token


class ScriptedPrompter:
    """Answers consent prompts from a list; records what the user was shown."""

    def __init__(self, answers: list[bool | None] | None = None) -> None:
        self.answers = list(answers or [])
        self.prompts: list[ConsentPrompt] = []
        self.notices: list[str] = []
        self.asked = asyncio.Event()

    async def ask(self, prompt: ConsentPrompt, wait_seconds: float) -> tuple[bool, str]:
        self.prompts.append(prompt)
        self.asked.set()
        answer = self.answers.pop(0) if self.answers else None
        if answer is None:  # the user never answers
            await asyncio.sleep(wait_seconds)
            return False, "timeout"
        return answer, "user" if answer else "declined"

    def notice(self, text: str) -> None:
        self.notices.append(text)


async def new_token(app: Any, group: str, hours: float = 1.0) -> str:
    async with app.state.sessionmaker() as db:
        issued = await create_enrollment_token(
            db, group=group, actor=Actor(kind="system"), hours=hours
        )
        await db.commit()
    return issued.token


def agent_settings(tmp: Path, **over: Any) -> AgentSettings:
    values: dict[str, Any] = {
        "config_dir": tmp / f"agent-{secrets.token_hex(3)}",
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "consent_timeout_seconds": 1.0,
        "notify": False,
        "shell_command": "/bin/sh",
    }
    values.update(over)
    return AgentSettings(**values)


class RunningAgent:
    def __init__(self, settings: AgentSettings, prompter: ScriptedPrompter) -> None:
        config = load_enrollment(settings)
        self.settings = settings
        self.prompter = prompter
        self.core = AgentCore(
            load_or_create_key(settings.key_path),
            prompter,
            pinned=config.broker_fingerprint,
            device_id=config.device_id,
            consent_timeout=settings.consent_timeout_seconds,
            shell_command=settings.shell_command,
        )
        self.handle = RunHandle(self.core, asyncio.Event())
        self.task = asyncio.create_task(run(settings, prompter, self.handle))
        self.device_id = config.device_id

    async def connected(self, gateway: Gateway) -> None:
        await asyncio.wait_for(self.handle.connected.wait(), 10)
        for _ in range(100):
            if self.device_id in gateway.links:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("agent never registered at the gateway")

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


async def enrolled_agent(
    app: Any, gateway: Gateway, tmp: Path, group: str, prompter: ScriptedPrompter
) -> RunningAgent:
    settings = agent_settings(tmp)
    token = await new_token(app, group)
    await enroll(settings, f"127.0.0.1:{gateway.port}", token, prompter)
    agent = RunningAgent(settings, prompter)
    await agent.connected(gateway)
    return agent


async def request_session(
    client: httpx.AsyncClient, token: str, device_id: str, capabilities: list[str], **extra: Any
) -> dict[str, Any]:
    body = {
        "ticket": {
            "system": "standalone",
            "external_id": f"HD-{secrets.randbelow(9999)}",
            "subject": "Printer offline",
        },
        "device_id": device_id,
        "reason": "printer driver keeps crashing",
        "capabilities": capabilities,
        "duration_minutes": 30,
        **extra,
    }
    resp = await client.post(
        "/api/v1/sessions", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status_code == 201, resp.text
    data: dict[str, Any] = resp.json()
    return data


async def session_state(client: httpx.AsyncClient, token: str, session_id: str) -> str:
    resp = await client.get(
        f"/api/v1/sessions/{session_id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["state"])


async def wait_state(
    client: httpx.AsyncClient, token: str, session_id: str, want: str, timeout: float = 10.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    state = ""
    while asyncio.get_running_loop().time() < deadline:
        state = await session_state(client, token, session_id)
        if state == want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"session {session_id} is {state}, wanted {want}")


async def recordings(app: Any, session_id: str) -> list[Any]:
    from broker.gateway.recording import list_recordings
    from broker.sessions import service as sessions

    async with app.state.sessionmaker() as db:
        record, _ = await sessions.load(db, session_id)
        return await list_recordings(
            app.state.audit_log, await db.connection(), record.ticket.ref, session_id
        )


async def read_cast(app: Any, session_id: str) -> Any:
    """The latest recording of a session, straight from the audit log."""
    from broker.gateway.recording import read_cast as read
    from broker.sessions import service as sessions

    found = await recordings(app, session_id)
    assert found, f"session {session_id} has no recording"
    async with app.state.sessionmaker() as db:
        record, _ = await sessions.load(db, session_id)
        return await read(
            app.state.audit_log, await db.connection(), record.ticket.ref, found[-1].recording_id
        )


def cast_output(text: str) -> str:
    """The concatenated output events of an asciicast v2 text."""
    import json

    lines = text.splitlines()[1:]
    return "".join(e[2] for e in map(json.loads, lines) if e[1] == "o")


async def recording_text(app: Any, session_id: str, want: str = "", timeout: float = 10.0) -> str:
    """The sealed terminal output of a session, once ``want`` has been sealed."""
    text = ""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await recordings(app, session_id):
            text = cast_output((await read_cast(app, session_id)).text)
            if want in text and text:
                return text
        await asyncio.sleep(0.1)
    return text


async def events(app: Any, stream: str, event_type: str) -> list[Any]:
    async with app.state.sessionmaker() as db:
        found = await app.state.audit_log.read_stream(await db.connection(), stream)
    return [r for r in found if r.event_type == event_type]


async def ticket_ref(app: Any, session_id: str) -> str:
    from broker.sessions import service as sessions

    async with app.state.sessionmaker() as db:
        record, _ = await sessions.load(db, session_id)
        return record.ticket.ref


async def wait_events(
    app: Any, stream: str, event_type: str, count: int = 1, timeout: float = 10.0
) -> list[Any]:
    found: list[Any] = []
    async with asyncio.timeout(timeout):
        while len(found) < count:
            found = await events(app, stream, event_type)
            await asyncio.sleep(0.05)
    return found


async def read_until(ws: Any, needle: bytes, timeout: float = 10.0) -> bytes:
    seen = b""
    async with asyncio.timeout(timeout):
        while needle not in seen:
            frame = await ws.recv()
            seen += frame if isinstance(frame, bytes) else frame.encode()
    return seen


async def drain(ws: Any, timeout: float = 10.0) -> bytes:
    """Everything the terminal socket still sends until the broker closes it."""
    import websockets

    seen = b""
    async with asyncio.timeout(timeout):
        try:
            while True:
                frame = await ws.recv()
                seen += frame if isinstance(frame, bytes) else frame.encode()
        except websockets.ConnectionClosed:
            return seen


async def terminal_uri(live_url: str, token: str, session_id: str, mode: str = "control") -> str:
    from broker.gateway.cli import ticket

    secret = await ticket(live_url, token, session_id, mode)
    return live_url.replace("http", "ws") + f"/api/v1/gateway/terminal?ticket={secret}"


async def echo_server() -> tuple[asyncio.Server, int]:
    """A service on the device's loopback that echoes what it gets (a forward's far end)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def forward_uri(live_url: str, token: str, session_id: str, port: int) -> str:
    """A forward socket's URL with a fresh one-time ticket (control mode)."""
    secret = await gateway_cli.ticket(live_url, token, session_id, "control")
    return gateway_cli.ws_url(live_url, f"/api/v1/gateway/forward?ticket={secret}&port={port}")
