"""A minimal broker for the agent's unit tests: real asyncssh ``listen_reverse`` on loopback.

It speaks the control protocol by hand (hello → welcome, consent_request → consent_decision)
so the agent is tested on its own, without the broker's database. No SSH is mocked: the agent
dials out, authenticates the broker's key against its pin, and serves channels for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from agent.config import AgentSettings, EnrollmentConfig, save_enrollment
from agent.consent import ConsentPrompt
from agent.identity import fingerprint, load_or_create_key
from agent.runner import RunHandle, run
from agent.server import CONTROL, AgentCore


class Prompter:
    """Answers from a list (None: never answers, so the agent's timeout decides)."""

    def __init__(self, answers: list[bool | None] | None = None) -> None:
        self.answers = list(answers or [])
        self.prompts: list[ConsentPrompt] = []
        self.notices: list[str] = []
        self.closed: list[str] = []  # sessions whose prompt was taken down before an answer
        self.asked = asyncio.Event()

    async def ask(self, prompt: ConsentPrompt, wait_seconds: float) -> tuple[bool, str]:
        self.prompts.append(prompt)
        self.asked.set()
        answer = self.answers.pop(0) if self.answers else None
        if answer is None:
            try:
                await asyncio.sleep(wait_seconds + 5)  # longer than the agent's own timeout
            except asyncio.CancelledError:
                self.closed.append(prompt.session_id)
                raise
            return False, "never"
        return answer, "user" if answer else "declined"

    def notice(self, text: str) -> None:
        self.notices.append(text)


@dataclass
class Link:
    """The broker's end of one agent connection, with its control channel open."""

    conn: asyncssh.SSHClientConnection
    writer: asyncssh.SSHWriter[bytes]
    reader: asyncssh.SSHReader[bytes]
    hello: dict[str, Any]
    inbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    def send(self, msg: dict[str, Any]) -> None:
        self.writer.write(json.dumps(msg).encode() + b"\n")

    async def pump(self) -> None:
        while line := await self.reader.readline():
            self.inbox.put_nowait(json.loads(line))

    async def expect(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.inbox.get()
                if msg.get("type") == kind:
                    return msg

    async def approve(self, session_id: str, capabilities: list[str]) -> dict[str, Any]:
        """Ask the device; returns the agent's signed decision."""
        self.send(consent_request(session_id, capabilities))
        return await self.expect("consent_decision")


def consent_request(session_id: str, capabilities: list[str]) -> dict[str, Any]:
    return {
        "type": "consent_request",
        "session_id": session_id,
        "technician": "Tina Tech",
        "ticket": "HD-7",
        "subject": "Printer offline",
        "reason": "driver crashes",
        "capabilities": capabilities,
        "duration_minutes": 30,
    }


class FakeBroker:
    """``listen_reverse`` with its own client key; accepted connections queue up as links."""

    def __init__(self) -> None:
        self.key = asyncssh.generate_private_key("ssh-ed25519")
        self.conns: asyncio.Queue[asyncssh.SSHClientConnection] = asyncio.Queue()
        self.port = 0
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)

    async def start(self) -> None:
        self._acceptor = await asyncssh.listen_reverse(
            "127.0.0.1",
            0,
            client_keys=[self.key],
            known_hosts=None,
            username="supportbroker",
            encoding=None,
            agent_path=None,
            acceptor=self.conns.put_nowait,
        )
        self.port = self._acceptor.get_port()

    async def link(self, policy: dict[str, Any], timeout: float = 10.0, **welcome: Any) -> Link:
        """The next agent that connects, welcomed with ``policy`` (and ``welcome``'s fields)."""
        async with asyncio.timeout(timeout):
            conn = await self.conns.get()
            writer, reader, _ = await conn.open_session(subsystem=CONTROL, encoding=None)
            hello = json.loads(await reader.readline())
        link = Link(conn, writer, reader, hello)
        link.send({"type": "welcome", "device_id": "dev-1", "policy": policy, **welcome})
        task = asyncio.create_task(link.pump())
        self._tasks.add(task)
        return link

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()


def settings_for(tmp: Path, **over: Any) -> AgentSettings:
    values: dict[str, Any] = {
        "config_dir": tmp / "agent",
        "consent_timeout_seconds": 0.3,
        "notify": False,
        "shell_command": "/bin/sh",
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
    }
    values.update(over)
    return AgentSettings(**values)


def enroll_locally(settings: AgentSettings, port: int, pinned: str) -> None:
    """What ``enroll`` leaves on disk, pointing at the fake broker."""
    load_or_create_key(settings.key_path)
    save_enrollment(
        settings,
        EnrollmentConfig(
            broker_host="127.0.0.1", broker_port=port, broker_fingerprint=pinned, device_id="dev-1"
        ),
    )


@contextlib.asynccontextmanager
async def running_agent(
    settings: AgentSettings, prompter: Prompter, pinned: str
) -> AsyncIterator[AgentCore]:
    """``agent.runner.run`` in a task (the real dial-out loop) until the block ends."""
    core = AgentCore(
        load_or_create_key(settings.key_path),
        prompter,
        pinned=pinned,
        device_id="dev-1",
        consent_timeout=settings.consent_timeout_seconds,
        shell_command=settings.shell_command,
    )
    task = asyncio.create_task(run(settings, prompter, RunHandle(core, asyncio.Event())))
    try:
        yield core
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
