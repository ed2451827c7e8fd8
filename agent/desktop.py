"""The user's desktop over RFB, for one session at a time (Linux with X11).

With ``view`` or ``control`` granted the agent serves the display over RFB bound to
127.0.0.1 with a one-time password made for that session: it starts ``x11vnc`` when the
grant arrives (so the technician's channel does not wait for it), view-only when only
``view`` was granted, and stops it when the grant goes (session ended, revoked, link lost);
``PR_SET_PDEATHSIG`` stops it even if the agent is killed. Or it attaches to a VNC server
the admin configured (``SUPPORTBROKER_AGENT_DESKTOP=attach``), which it never stops.

Each ``desktop SESSION control|view`` channel from the broker is one RFB connection: the
agent authenticates to the server itself (the password never leaves the device; watchers
get the view-only password, so x11vnc refuses their input too) and the channel carries the
stream from ClientInit on. What cannot be served (Wayland, no display, macOS, Windows) is
said in words that reach the technician: in the hello (:func:`unavailable_rights`) and on
the channel's stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import structlog

from agent.channels import relay_local
from agent.errors import AgentError
from agent.vncauth import open_authenticated

log = structlog.get_logger("agent.desktop")

DESKTOP_CAPS = frozenset({"view", "control"})
START_SECONDS = 20.0
STOP_SECONDS = 5.0
MODES = ("control", "view")


class DesktopUnavailable(AgentError):
    """This device cannot show its desktop now; the message says why, for the technician."""


@dataclass(frozen=True)
class DesktopConfig:
    """How the desktop is served: ``auto`` starts x11vnc on the user's X display, ``attach``
    uses the admin's server on 127.0.0.1:``port``, ``off`` refuses the desktop rights."""

    mode: str = "auto"
    display: str | None = None
    x11vnc: str = "x11vnc"
    port: int | None = None
    password_file: Path | None = None
    viewonly_password_file: Path | None = None
    session_type: str = ""  # XDG_SESSION_TYPE
    wayland_display: str = ""

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, **over: object
    ) -> DesktopConfig:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "display": env.get("DISPLAY") or None,
            "session_type": env.get("XDG_SESSION_TYPE", ""),
            "wayland_display": env.get("WAYLAND_DISPLAY", ""),
        }
        values.update({k: v for k, v in over.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def desktop_problem(config: DesktopConfig) -> str | None:
    """Why this device cannot show its desktop (None: it can)."""
    if sys.platform in ("darwin", "win32"):
        system = "macOS" if sys.platform == "darwin" else "Windows"
        return f"the agent cannot share the screen on {system} yet (Linux with X11 only)"
    if config.mode == "off":
        return "screen sharing is switched off on this device (SUPPORTBROKER_AGENT_DESKTOP=off)"
    if config.mode == "attach":
        return (
            None
            if config.port is not None
            else "the device's VNC server has no port (SUPPORTBROKER_AGENT_DESKTOP_PORT)"
        )
    return _x11_problem(config)


def _x11_problem(config: DesktopConfig) -> str | None:
    if config.session_type.lower() == "wayland" or config.wayland_display:
        return (
            "the user's session runs Wayland, whose screen the agent cannot share "
            "(log in to an X11 session, or configure a VNC server on the device)"
        )
    if not config.display:
        return "no X display on this device ($DISPLAY is not set): nothing to show"
    if shutil.which(config.x11vnc) is None:
        return f"{config.x11vnc} is not installed on the device (apt install x11vnc)"
    return None


def unavailable_rights(config: DesktopConfig) -> dict[str, str]:
    """The rights this agent cannot give here, each with the reason (sent in the hello)."""
    from agent.state import FORWARD_CAPS

    missing: dict[str, str] = {}
    if sys.platform == "win32":
        missing["shell"] = "the agent has no terminal on Windows yet"
    problem = desktop_problem(config)
    if problem is not None:
        # A right that still reaches port forwards is not only a desktop right.
        for right in sorted(DESKTOP_CAPS - FORWARD_CAPS):
            missing[right] = problem
    return missing


@dataclass(frozen=True)
class Endpoint:
    """Where the session's RFB server listens and the passwords the agent presents."""

    port: int
    password: str | None
    view_password: str | None

    def password_for(self, mode: str) -> str | None:
        if mode == "view" and self.view_password is not None:
            return self.view_password
        return self.password


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover (runs in the child before exec)
    """x11vnc must not outlive the agent: ask Linux to SIGKILL it when we go. Not SIGTERM:
    x11vnc's own SIGTERM handler can deadlock (seen: blocked on a lock with SIGTERM masked,
    its display and agent gone, its port still open), and a kill leaves nothing behind, as
    the password file was removed when x11vnc read it."""
    if sys.platform != "linux":  # prctl is Linux's; elsewhere it is never set as preexec_fn
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _read_first_line(path: Path) -> str | None:
    text = path.read_text(encoding="latin-1").splitlines()
    return text[0].strip() if text else None


class X11vnc:
    """One x11vnc for one session, with fresh passwords (8 characters: DES uses no more)."""

    def __init__(self, config: DesktopConfig, session_id: str, *, view_only: bool) -> None:
        self.config = config
        self.session_id = session_id
        self.view_only = view_only
        self.process: asyncio.subprocess.Process | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._drainer: asyncio.Future[None] | None = None

    async def start(self) -> Endpoint:
        password, view_password = secrets.token_urlsafe(6)[:8], secrets.token_urlsafe(6)[:8]
        self._dir = tempfile.TemporaryDirectory(prefix="sb-desktop-")
        secret = Path(self._dir.name) / "passwd"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="latin-1") as fh:
            fh.write(f"{password}\n__BEGIN_VIEWONLY__\n{view_password}\n")
        port = _free_port()
        argv = [
            self.config.x11vnc,
            *("-display", str(self.config.display)),
            "-localhost",  # 127.0.0.1 only
            *("-rfbport", str(port)),
            *("-passwdfile", f"rm:{secret}"),  # read once, then removed
            *("-shared", "-forever", "-norc", "-quiet", "-noncache", "-nolookup", "-nobell"),
            *(["-viewonly"] if self.view_only else []),
        ]
        self.process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        try:
            await asyncio.wait_for(self._ready(port), START_SECONDS)
        except BaseException:
            await self.stop()
            raise
        log.info("desktop.started", session_id=self.session_id, view_only=self.view_only)
        return Endpoint(port, password, view_password)

    async def _ready(self, port: int) -> None:
        """x11vnc prints PORT=N once it listens; exiting first means it could not start."""
        assert self.process is not None
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            if line.strip() == f"PORT={port}".encode():
                self._drainer = asyncio.ensure_future(self._drain())
                return
        err = b""
        if self.process.stderr is not None:
            err = await self.process.stderr.read()
        lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
        detail = "; ".join(lines[-3:])[:300] or "no message"
        raise DesktopUnavailable(f"x11vnc could not share display {self.config.display}: {detail}")

    async def _drain(self) -> None:
        """Read x11vnc's output to its end so a chatty x11vnc never blocks on a full pipe."""
        process = self.process
        if process is None:
            return

        async def _empty(stream: asyncio.StreamReader | None) -> None:
            with contextlib.suppress(OSError, ValueError):
                while stream is not None and await stream.read(65536):
                    pass

        await asyncio.gather(_empty(process.stdout), _empty(process.stderr))

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            log.info("desktop.stopped", session_id=self.session_id)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


class Desktops:
    """The desktop servers of this agent, one per session that was granted a desktop right."""

    def __init__(self, config: DesktopConfig) -> None:
        self.config = config
        self._servers: dict[str, X11vnc] = {}
        self._starts: dict[str, asyncio.Task[Endpoint]] = {}
        self._stopping: set[asyncio.Future[None]] = set()

    def problem(self) -> str | None:
        return desktop_problem(self.config)

    def prepare(self, session_id: str, capabilities: frozenset[str]) -> None:
        """A grant with a desktop right arrived: start its server now, in the background."""
        if capabilities & DESKTOP_CAPS and self.problem() is None:
            task = self._start(session_id, view_only="control" not in capabilities)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # awaited later

    def _start(self, session_id: str, *, view_only: bool) -> asyncio.Task[Endpoint]:
        found = self._starts.get(session_id)
        if found is not None and self._usable(session_id, found):
            return found
        task = asyncio.ensure_future(self._launch(session_id, view_only=view_only))
        self._starts[session_id] = task
        return task

    def _usable(self, session_id: str, start: asyncio.Task[Endpoint]) -> bool:
        """A start still running, or one that succeeded and whose server still runs (a
        crashed x11vnc or a failed start is tried again by the next channel)."""
        if not start.done():
            return True
        if start.cancelled() or start.exception() is not None:
            return False
        server = self._servers.get(session_id)
        return server is None or server.running  # attached: nothing of ours to watch

    async def _launch(self, session_id: str, *, view_only: bool) -> Endpoint:
        if self.config.mode == "attach":
            return self._attached()
        old = self._servers.pop(session_id, None)
        if old is not None:
            await old.stop()
        server = X11vnc(self.config, session_id, view_only=view_only)
        self._servers[session_id] = server
        return await server.start()

    def _attached(self) -> Endpoint:
        assert self.config.port is not None
        full = view = None
        try:
            if self.config.password_file is not None:
                full = _read_first_line(self.config.password_file)
            if self.config.viewonly_password_file is not None:
                view = _read_first_line(self.config.viewonly_password_file)
        except OSError as exc:
            raise DesktopUnavailable(f"cannot read the VNC password file: {exc}") from exc
        return Endpoint(self.config.port, full, view)

    async def endpoint(self, session_id: str, capabilities: frozenset[str]) -> Endpoint:
        problem = self.problem()
        if problem is not None:
            raise DesktopUnavailable(problem)
        return await asyncio.shield(
            self._start(session_id, view_only="control" not in capabilities)
        )

    def release(self, session_id: str) -> None:
        """The grant is gone: stop the session's server (never the admin's)."""
        start = self._starts.pop(session_id, None)
        server = self._servers.pop(session_id, None)
        if start is not None and not start.done():
            start.cancel()
        if server is not None:
            stopping = asyncio.ensure_future(server.stop())
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        for session_id in list(self._servers):
            server = self._servers.pop(session_id)
            await server.stop()
        self._starts.clear()
        if self._stopping:
            await asyncio.wait(set(self._stopping))


async def run_desktop(
    process: asyncssh.SSHServerProcess[bytes],
    desktops: Desktops,
    session_id: str,
    capabilities: frozenset[str],
    mode: str,
) -> None:
    """One RFB connection for the broker: authenticated here, relayed from ClientInit on."""
    try:
        endpoint = await desktops.endpoint(session_id, capabilities)
        reader, writer = await open_authenticated(endpoint.port, endpoint.password_for(mode))
    except AgentError as exc:
        process.stderr.write(f"{exc}\n".encode())
        process.exit(1)
        return
    await relay_local(process, reader, writer)
    process.exit(0)
