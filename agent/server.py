"""The agent's side of the reverse SSH connection.

The agent dials out (no inbound port on the user's machine) but is the SSH *server* on that
connection (asyncssh ``connect_reverse``): the broker, as SSH client, authenticates with its
gateway key (pinned here by fingerprint) and opens channels: ``supportbroker-control`` (JSON
lines both ways), ``shell``/``forward`` exec requests and the ``sftp`` subsystem.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import platform
import time
from datetime import UTC, datetime
from typing import Any

import asyncssh

from agent import __version__
from agent.channels import ConfinedSFTPServer, run_forward, run_shell
from agent.consent import ConsentPrompt, Prompter
from agent.errors import CapabilityDeniedError, ConnectionLostError, EnrollmentError
from agent.identity import digest, fingerprint, sign_receipt
from agent.state import FORWARD_CAPS, Grant, Grants, Policy

CONTROL = "supportbroker-control"


class AgentCore:
    """State of one agent across reconnects: its key, grants and the control channel."""

    def __init__(
        self,
        key: asyncssh.SSHKey,
        prompter: Prompter,
        *,
        pinned: str | None,
        device_id: str | None = None,
        token: str | None = None,
        consent_timeout: float = 120.0,
        shell_command: str | None = None,
    ) -> None:
        self.key = key
        self.prompter = prompter
        self.pinned = pinned
        self.device_id = device_id
        self.token = token
        self.consent_timeout = consent_timeout
        self.shell_command = shell_command
        self.grants = Grants()
        self.seen_broker_fp: str | None = None
        self.mismatch: str | None = None
        self.welcome: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._control: asyncssh.SSHWriter[bytes] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- connection plumbing -------------------------------------------------------------

    def server_factory(self) -> asyncssh.SSHServer:
        return _AgentServer(self)

    def reset_connection(self) -> None:
        """The connection is gone: nothing approved survives it (the broker fails them)."""
        self._control = None
        for grant in self.grants.active():
            self.grants.drop(grant.session_id)
        # Each connection gets its own welcome; one still awaited fails now rather than
        # leaving ``run`` waiting out its time-out on a dead connection.
        old, self.welcome = self.welcome, asyncio.get_running_loop().create_future()
        if not old.done():
            old.set_exception(ConnectionLostError("connection lost before the welcome"))
            old.exception()  # retrieved: an awaiter still gets it, nobody else is warned

    def send(self, msg: dict[str, Any]) -> None:
        if self._control is None:
            raise CapabilityDeniedError("no control channel to the broker")
        self._control.write(json.dumps(msg).encode() + b"\n")

    async def end_all(self) -> None:
        """The local user ended the session(s): tell the broker and cut the channels now."""
        for grant in self.grants.active():
            self.grants.drop(grant.session_id)
            if self._control is not None:
                self.send(
                    {"type": "end_session", "session_id": grant.session_id, "by": getpass.getuser()}
                )
            self.prompter.notice(f"session {grant.session_id} ended by you")

    # -- channels ------------------------------------------------------------------------

    async def handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        try:
            if process.subsystem == CONTROL:
                await self._control_loop(process)
            else:
                await self._exec(process, (process.command or "").split())
        except CapabilityDeniedError as exc:
            process.stderr.write(f"refused by the agent: {exc}\n".encode())
            process.exit(126)

    def sftp_server(self, chan: asyncssh.SSHServerChannel[bytes]) -> ConfinedSFTPServer:
        """SFTP for the session named in env SB_SESSION; refused sessions get no directory."""
        session_id = chan.get_environment().get("SB_SESSION", "")
        try:
            grant = self.grants.require(session_id, frozenset({"files"}))
        except CapabilityDeniedError as exc:
            return ConfinedSFTPServer(chan, (), session_id, self._report, refusal=str(exc))
        grant.closers.append(chan.close)
        return ConfinedSFTPServer(chan, self.grants.policy.allowed_paths, session_id, self._report)

    async def _exec(self, process: asyncssh.SSHServerProcess[bytes], argv: list[str]) -> None:
        if len(argv) == 2 and argv[0] == "shell":
            grant = self.grants.require(argv[1], frozenset({"shell"}))
            grant.closers.append(process.close)
            await run_shell(process, self.shell_command)
        elif len(argv) == 3 and argv[0] == "forward" and argv[2].isdigit():
            grant = self.grants.require(argv[1], FORWARD_CAPS)
            self.grants.require_port(int(argv[2]))
            grant.closers.append(process.close)
            await run_forward(process, int(argv[2]))
        else:
            raise CapabilityDeniedError(f"unknown request {' '.join(argv)[:60]!r}")

    def _report(self, msg: dict[str, Any]) -> None:
        if self._control is not None:
            self.send(msg)

    async def _control_loop(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        self._control = process.stdout
        hello: dict[str, Any] = {
            "type": "hello",
            "version": __version__,
            "hostname": platform.node(),
            "device_id": self.device_id,
        }
        if self.token is not None:
            hello["token"] = self.token
        self.send(hello)
        while line := await process.stdin.readline():
            msg = json.loads(line)
            self._spawn(self._dispatch(msg))
        process.exit(0)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "welcome":
            self.grants.policy = Policy.from_message(msg.get("policy", {}))
            self.device_id = str(msg.get("device_id"))
            if not self.welcome.done():
                self.welcome.set_result(msg)
        elif kind == "refused":
            if not self.welcome.done():
                self.welcome.set_exception(EnrollmentError(str(msg.get("detail"))))
        elif kind == "consent_request":
            await self._consent(msg)
        elif kind in {"unattended", "approved_remotely"}:
            self._granted_elsewhere(msg, unattended=kind == "unattended")
        elif kind == "session_ended" and self.grants.drop(str(msg.get("session_id"))):
            self.prompter.notice(f"session ended: {msg.get('reason', '')}")

    async def _consent(self, msg: dict[str, Any]) -> None:
        prompt = ConsentPrompt.from_message(msg)
        try:
            # The prompter is given the deadline, but the agent enforces it itself: a prompt
            # that hangs (a stuck notification, a blocked terminal) still ends as a denial.
            approved, why = await asyncio.wait_for(
                self.prompter.ask(prompt, self.consent_timeout), self.consent_timeout + 0.5
            )
        except TimeoutError:
            approved, why = False, "timeout"
            self.prompter.notice("no answer in time: request denied")
        receipt = {
            "v": 1,
            "session_id": prompt.session_id,
            "decision": "approve" if approved else "deny",
            "why": why,
            "request_digest": digest(msg),
            "capabilities": list(prompt.capabilities),
            "duration_minutes": prompt.duration_minutes,
            "device_fingerprint": fingerprint(self.key),
            "decided_by": getpass.getuser(),
            "decided_at": datetime.now(UTC).isoformat(),
        }
        if approved:
            self.grants.add(
                Grant(
                    prompt.session_id,
                    frozenset(prompt.capabilities),
                    time.monotonic() + prompt.duration_minutes * 60,
                )
            )
        self.send(
            {
                "type": "consent_decision",
                "receipt": receipt,
                "signature": sign_receipt(self.key, receipt),
            }
        )

    def _granted_elsewhere(self, msg: dict[str, Any], *, unattended: bool) -> None:
        """Unattended (group policy) or approved on the web consent page with the code."""
        session_id = str(msg.get("session_id"))
        if unattended and not self.grants.policy.unattended_allowed:
            self.send({"type": "unattended_refused", "session_id": session_id})
            return
        caps = frozenset(str(c) for c in msg.get("capabilities", []))
        minutes = int(msg.get("duration_minutes", 0))
        self.grants.add(Grant(session_id, caps, time.monotonic() + minutes * 60, unattended))
        how = "UNATTENDED" if unattended else "approved (consent link)"
        self.prompter.notice(
            f"{how} remote session by {msg.get('technician', '?')} for "
            f"{msg.get('ticket', '?')} is running (type 'end' to stop it)"
        )


class _AgentServer(asyncssh.SSHServer):
    """Admits exactly the pinned broker key (any key while enrolling, which records it)."""

    def __init__(self, core: AgentCore) -> None:
        self.core = core

    def connection_lost(self, exc: Exception | None) -> None:
        self.core.reset_connection()

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        fp = fingerprint(key)
        self.core.seen_broker_fp = fp
        if self.core.pinned is None:  # first enrollment without a published fingerprint
            return True
        if fp != self.core.pinned:
            self.core.mismatch = fp
            return False
        return True
