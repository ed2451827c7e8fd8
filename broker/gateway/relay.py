"""One shell channel to an agent, shared by the technician, an expert and supervisors.

Output goes to the recorder first and then fans out to every attached viewer. Input is taken
only from viewers that may type (technician, expert); it is recorded only if the group says so
(typed passwords live there). A timer seals the output of a quiet terminal within the
recorder's chunk interval. If the recorder cannot seal (``RecordingFailed``) the shell is
closed and ``on_failure`` stops the session and seals a gap event: no recording, no session.

:func:`open_shell` and :func:`open_forward` open the channels; the agent's refusal of one
raises :class:`ChannelRefused` (an SSH request failure, never a channel that opens and exits).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh
import structlog

from broker.errors import PolicyDenied, ProviderError
from broker.gateway.recording import Recorder, RecordingFailed

log = structlog.get_logger("broker.gateway.relay")

TICK_SECONDS = 0.25
FORWARD_BUFFER = 4 << 20


@dataclass(eq=False)
class Viewer:
    name: str
    mode: str  # control | join | watch
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(1024))

    @property
    def may_type(self) -> bool:
        return self.mode in ("control", "join")


class ShellRelay:
    def __init__(
        self,
        session_id: str,
        process: asyncssh.SSHClientProcess[bytes],
        recorder: Recorder,
        *,
        record_input: bool,
        on_failure: Callable[[str, str], Awaitable[None]],
    ) -> None:
        self.session_id = session_id
        self.process = process
        self.recorder = recorder
        self.record_input = record_input
        self.on_failure = on_failure  # (why, recording_id)
        self.viewers: set[Viewer] = set()
        self.closed = asyncio.Event()
        self.reason = ""
        self.failure: str | None = None
        self._closing: str | None = None  # why close() was called, if it was
        self._failing: asyncio.Task[None] | None = None
        self._pump = asyncio.create_task(self._read(), name=f"relay-{session_id}")
        self._ticker = asyncio.create_task(self._tick(), name=f"relay-tick-{session_id}")

    async def _read(self) -> None:
        reason = "shell exited"
        try:
            while data := await self.process.stdout.read(65536):
                await self.recorder.output(data)
                for viewer in list(self.viewers):
                    with contextlib.suppress(asyncio.QueueFull):  # a stuck browser loses frames
                        viewer.queue.put_nowait(data)
            if self.process.exit_status is None and self.process.exit_signal is None:
                reason = "agent channel lost"
        except RecordingFailed as exc:
            await self._fail(exc)
        except (asyncssh.Error, OSError) as exc:
            reason = f"agent channel lost: {exc}"
        finally:
            await self._finish(self.failure or self._closing or reason)

    async def _tick(self) -> None:
        """Seal what a quiet terminal showed, so it is durable within the chunk interval."""
        while not self.closed.is_set():
            await asyncio.sleep(TICK_SECONDS)
            try:
                await self.recorder.flush_if_due()
            except RecordingFailed as exc:
                await self._fail(exc)
                return

    async def _fail(self, exc: RecordingFailed) -> None:
        """Fail-closed: the shell goes away and the session is stopped with a gap event."""
        if self.failure is not None:
            return
        self.failure = f"recording failed: {exc}"
        log.error("gateway.recording_failed", session_id=self.session_id, error=str(exc)[:300])
        self.process.close()
        # Its own task: the caller (pump or timer) may be cancelled by the close that follows,
        # and the gap event with the failed state must still commit.
        self._failing = asyncio.create_task(self._report_failure(self.failure))
        await asyncio.shield(self._failing)

    async def _report_failure(self, why: str) -> None:
        try:
            await self.on_failure(why, self.recorder.recording_id)
        except Exception:
            # Neither the recording nor the gap could be sealed: the shell is closed anyway;
            # this must reach an operator.
            log.critical("gateway.gap_not_sealed", session_id=self.session_id, exc_info=True)
            raise

    async def _finish(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self.reason = reason
        self._ticker.cancel()
        for viewer in list(self.viewers):
            viewer.queue.put_nowait(None)
        try:
            await self.recorder.close(reason)
        except RecordingFailed as exc:
            # The gap is sealed by on_failure; the session may already be over, which
            # on_failure tolerates (it only fails sessions that are still open).
            if self.failure is None:
                await self._fail(exc)

    def attach(self, viewer: Viewer) -> None:
        self.viewers.add(viewer)

    def detach(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)

    async def send(self, viewer: Viewer, data: bytes) -> None:
        if not viewer.may_type or self.closed.is_set() or self.failure is not None:
            return
        if self.record_input:
            try:
                await self.recorder.input(data)
            except RecordingFailed as exc:
                await self._fail(exc)
                return  # unrecorded input never reaches the device
        self.process.stdin.write(data)

    def resize(self, cols: int, rows: int) -> None:
        if 0 < cols < 1000 and 0 < rows < 1000:
            self.process.change_terminal_size(cols, rows)

    async def close(self, reason: str) -> None:
        """End the shell and seal the recording with ``reason`` (idempotent)."""
        if self._closing is None:
            self._closing = reason
        self.process.close()
        _, pending = await asyncio.wait({self._pump}, timeout=5)
        for task in pending:  # the agent is not answering: stop reading
            task.cancel()
        await self._finish(reason)
        if self._failing is not None:
            await asyncio.wait({self._failing})


class ChannelRefused(PolicyDenied):
    """The agent refused the channel request itself (its grants or its policy say no)."""


async def _open(
    conn: asyncssh.SSHClientConnection, command: str, what: str, **options: Any
) -> asyncssh.SSHClientProcess[bytes]:
    """Open ``command`` on the device. The agent answers the request only after checking it
    against what the local user approved: its refusal fails the request here, it never
    shows up as a channel that opens and then exits."""
    try:
        process: asyncssh.SSHClientProcess[bytes] = await conn.create_process(
            command, encoding=None, **options
        )
    except asyncssh.ChannelOpenError as exc:
        if exc.code == asyncssh.OPEN_REQUEST_SESSION_FAILED:
            raise ChannelRefused(f"the agent on the device refused the {what}") from exc
        raise ProviderError(f"could not open the {what} to the agent: {exc}") from exc
    except (asyncssh.Error, OSError) as exc:
        raise ProviderError(f"could not open the {what} to the agent: {exc}") from exc
    return process


async def open_shell(
    conn: asyncssh.SSHClientConnection, session_id: str, size: tuple[int, int] = (80, 24)
) -> asyncssh.SSHClientProcess[bytes]:
    """A PTY running the user's shell on the device (the agent checks the grant)."""
    return await _open(
        conn, f"shell {session_id}", "shell", term_type="xterm-256color", term_size=size
    )


async def open_forward(
    conn: asyncssh.SSHClientConnection, session_id: str, port: int
) -> asyncssh.SSHClientProcess[bytes]:
    """A byte pipe to 127.0.0.1:port on the device (the agent checks the grant and port)."""
    process = await _open(
        conn,
        f"forward {session_id} {port}",
        f"forward to port {port}",
        window=8 << 20,
        max_pktsize=128 << 10,
    )
    # asyncssh's 64 KiB high-water mark makes every large frame wait for the link to drain
    # to 16 KiB: the pipe stalls between hops. A few MiB keep it full (memory stays bounded).
    process.channel.set_write_buffer_limits(high=FORWARD_BUFFER)
    return process
