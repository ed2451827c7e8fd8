"""The agent's side of the reverse SSH connection.

The agent dials out (no inbound port on the user's machine) but is the SSH *server* on that
connection (asyncssh ``connect_reverse``): the broker, as SSH client, authenticates with its
gateway key (pinned here by fingerprint) and opens channels: ``supportbroker-control`` (JSON
lines both ways), ``shell``/``forward``/``desktop`` exec requests and the ``sftp`` subsystem.
The hello names the rights this agent cannot give here, and why (a desktop on Wayland, a
shell on Windows), so the broker refuses them when they are asked for.

Each request is checked against the local grants *before* it is accepted
(:class:`_AgentSession`): a refused one fails the broker's channel open at the SSH level, so
the broker can never mistake a refusal for an opened channel.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import platform
import time
from collections.abc import Mapping
from typing import Any, cast

import asyncssh
from asyncssh.channel import SSHChannel
from asyncssh.sftp import MIN_SFTP_VERSION

from agent import __version__
from agent.asking import Asking
from agent.channels import ConfinedSFTPServer, run_forward, run_shell
from agent.consent import Prompter
from agent.desktop import DESKTOP_CAPS, DesktopConfig, Desktops, run_desktop, unavailable_rights
from agent.errors import CapabilityDeniedError, ConnectionLostError, EnrollmentError
from agent.identity import fingerprint
from agent.presence import Presence
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
        desktop: DesktopConfig | None = None,
    ) -> None:
        self.key = key
        self.desktops = Desktops(desktop or DesktopConfig.from_environment())
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
        self.presence = Presence(prompter)
        self.asking = Asking(
            key, prompter, self.grants, self.send, grant=self._grant, timeout=consent_timeout
        )

    # -- connection plumbing -------------------------------------------------------------

    def server_factory(self) -> asyncssh.SSHServer:
        return _AgentServer(self)

    def reset_connection(self) -> None:
        """The connection is gone: nothing approved survives it (the broker fails them)."""
        self._control = None
        self.presence.reset()
        for grant in self.grants.active():
            self.grants.drop(grant.session_id)
        self.asking.lost()
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
            self.presence.ended(grant.session_id)
            if self._control is not None:
                self.send(
                    {"type": "end_session", "session_id": grant.session_id, "by": getpass.getuser()}
                )
            self.prompter.notice(f"session {grant.session_id} ended by you")

    # -- channels ------------------------------------------------------------------------

    def admit(self, command: str | None, subsystem: str | None, env: Mapping[str, str]) -> None:
        """Accept a channel request only if the local grants allow it (else refuse, noticed).

        Called while the request is answered, before the channel runs anything."""
        try:
            if subsystem == CONTROL:
                return
            if subsystem == "sftp":
                self.grants.require(env.get("SB_SESSION", ""), frozenset({"files"}))
            elif command is not None:
                self._check(command.split())
            else:
                raise CapabilityDeniedError(f"unknown request {subsystem or 'shell'!r}")
        except CapabilityDeniedError as exc:
            request = command or f"subsystem {subsystem}"
            self.prompter.notice(f"refused a request from the broker ({request[:60]}): {exc}")
            raise

    def _check(self, argv: list[str]) -> Grant:
        if len(argv) == 2 and argv[0] == "shell":
            return self.grants.require(argv[1], frozenset({"shell"}))
        if len(argv) == 3 and argv[0] == "forward" and argv[2].isdigit():
            grant = self.grants.require(argv[1], FORWARD_CAPS)
            self.grants.require_port(int(argv[2]))
            return grant
        if len(argv) == 3 and argv[0] == "desktop" and argv[2] in ("control", "view"):
            grant = self.grants.require(argv[1], DESKTOP_CAPS)
            if argv[2] == "control" and "control" not in grant.capabilities:
                raise CapabilityDeniedError(f"session {argv[1]} was not approved for control")
            return grant
        raise CapabilityDeniedError(f"unknown request {' '.join(argv)[:60]!r}")

    async def handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        try:
            if process.subsystem == CONTROL:
                await self._control_loop(process)
            else:
                await self._exec(process, (process.command or "").split())
        except CapabilityDeniedError as exc:
            # Admitted a moment ago, withdrawn since (the session ended in between).
            process.stderr.write(f"refused by the agent: {exc}\n".encode())
            process.exit(126)

    def sftp_server(self, channel: SSHChannel[bytes]) -> ConfinedSFTPServer:
        """SFTP for the session named in env SB_SESSION; refused sessions get no directory."""
        chan = cast("asyncssh.SSHServerChannel[bytes]", channel)  # we are the SSH server
        session_id = chan.get_environment().get("SB_SESSION", "")
        try:
            grant = self.grants.require(session_id, frozenset({"files"}))
        except CapabilityDeniedError as exc:
            return ConfinedSFTPServer(chan, (), session_id, self._report, refusal=str(exc))
        grant.closers.append(chan.close)
        return ConfinedSFTPServer(chan, self.grants.policy.allowed_paths, session_id, self._report)

    async def _exec(self, process: asyncssh.SSHServerProcess[bytes], argv: list[str]) -> None:
        grant = self._check(argv)  # again: the grant may have been dropped since admit()
        grant.closers.append(process.close)
        self.presence.opened(grant.session_id)  # the technician is connected while it runs
        try:
            if argv[0] == "shell":
                await run_shell(process, self.shell_command)
            elif argv[0] == "desktop":
                await run_desktop(process, self.desktops, argv[1], grant.capabilities, argv[2])
            else:
                await run_forward(process, int(argv[2]))
        finally:
            self.presence.closed(grant.session_id)

    def _report(self, msg: dict[str, Any]) -> None:
        # The user at the device sees every file that moved, under its final name (the broker
        # uploads to ".NAME.ID.sbpart" and renames it once the hashes agree).
        name = str(msg.get("name", ""))
        if name.endswith(".sbpart"):
            name = name.removeprefix(".").rsplit(".", 2)[0]
        way = "written to this computer" if msg.get("direction") == "upload" else "read from it"
        self.prompter.notice(f"file {name} ({msg.get('size')} bytes) {way}")
        if self._control is not None:
            self.send(msg)

    async def _control_loop(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        self._control = process.stdout
        hello: dict[str, Any] = {
            "type": "hello",
            "version": __version__,
            "hostname": platform.node(),
            "device_id": self.device_id,
            "unavailable": unavailable_rights(self.desktops.config),
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
            self.asking.consent_page = str(msg.get("consent_page") or "")
            if not self.welcome.done():
                self.welcome.set_result(msg)
        elif kind == "refused":
            if not self.welcome.done():
                self.welcome.set_exception(EnrollmentError(str(msg.get("detail"))))
        elif kind == "consent_request":
            self.presence.asked(msg)
            await self.asking.request(msg)
        elif kind == "consent_result":
            self.asking.result(msg)
        elif kind == "consent_closed":
            self.asking.closed(msg)
        elif kind in {"unattended", "approved_remotely"}:
            self._granted_elsewhere(msg, unattended=kind == "unattended")
        elif kind == "viewer":  # an expert joined or a supervisor watches (or left)
            self.presence.viewer(msg)
        elif kind == "session_ended":
            self.presence.ended(str(msg.get("session_id")))
            if self.grants.drop(str(msg.get("session_id"))):
                self.prompter.notice(f"session ended: {msg.get('reason', '')}")

    def _grant(self, grant: Grant) -> None:
        """Hold ``grant``; a desktop right starts the session's desktop server now (the
        technician's first channel would wait for it), stopped when the grant goes."""
        self.grants.add(grant)
        if grant.capabilities & DESKTOP_CAPS:
            self.desktops.prepare(grant.session_id, grant.capabilities)
            grant.closers.append(lambda: self.desktops.release(grant.session_id))

    def _granted_elsewhere(self, msg: dict[str, Any], *, unattended: bool) -> None:
        """Unattended (group policy) or approved on the web consent page with the code."""
        session_id = str(msg.get("session_id"))
        if unattended and not self.grants.policy.unattended_allowed:
            self.send({"type": "unattended_refused", "session_id": session_id})
            return
        prompt = self.asking.approved_elsewhere(msg)  # its prompt, if one is up, closes
        self.presence.asked(msg)
        caps = frozenset(str(c) for c in msg.get("capabilities", []))
        minutes = int(msg.get("duration_minutes", 0))
        self._grant(Grant(session_id, caps, time.monotonic() + minutes * 60, unattended))
        # The broker opens channels for this session only after this acknowledgement: a
        # channel racing ahead of the grant would be refused.
        self.send({"type": "granted", "session_id": session_id})
        who = f"{msg.get('technician', '?')} for {msg.get('ticket', '?')}"
        if unattended:
            self.prompter.notice(
                f"UNATTENDED remote session by {who} is running (type 'end' to stop it)"
            )
            return
        outcome = msg.get("outcome") or "approved elsewhere"
        asked = "the request you were asked about" if prompt is not None else "the request"
        self.prompter.notice(
            f"{asked} from {who} was {outcome} (consent link); the session may run now "
            "(type 'end' to stop it)"
        )


class _AgentSession(asyncssh.SSHServerProcess[bytes]):
    """One session channel from the broker. Its exec or subsystem request is answered only
    after :meth:`AgentCore.admit`: a refusal is an SSH request failure, so the broker's
    ``create_process`` raises instead of opening a channel that then exits."""

    def __init__(self, core: AgentCore) -> None:
        super().__init__(core.handle, core.sftp_server, MIN_SFTP_VERSION, False)
        self._core = core

    def _admitted(self, command: str | None, subsystem: str | None) -> bool:
        env = self.channel.get_environment()
        try:
            self._core.admit(command, subsystem, env)
        except CapabilityDeniedError:
            return False
        return True

    def shell_requested(self) -> bool:
        return self._admitted(None, None)

    def exec_requested(self, command: str) -> bool:
        return self._admitted(command, None)

    def subsystem_requested(self, subsystem: str) -> bool:
        return self._admitted(None, subsystem)


class _AgentServer(asyncssh.SSHServer):
    """Admits exactly the pinned broker key (any key while enrolling, which records it)."""

    def __init__(self, core: AgentCore) -> None:
        self.core = core

    def session_requested(self) -> _AgentSession:
        return _AgentSession(self.core)

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
