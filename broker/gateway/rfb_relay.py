"""One viewer's desktop connection: browser WebSocket ⇄ broker ⇄ SSH channel ⇄ agent ⇄ RFB.

Every viewer (the technician, an invited expert, a watching supervisor) has its own
connection: its own channel to the agent, its own RFB client connection to the device's
server and its own :class:`~broker.gateway.rfb.ClientFilter`, so one viewer's rights never
leak into another's stream. Server→client bytes are relayed as they come (nothing to
enforce there); client→server bytes pass the filter.

The session's record is the technician's connection: :class:`DesktopTap` is where a recorder
attaches to it (ServerInit, then every server→client byte, then the client messages that
were passed, then the end); experts' and watchers' streams are views of the same screen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import asyncssh
import structlog
from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from audit.recording import RecordingFailed
from broker.gateway.relay import FORWARD_BUFFER, ChannelRefused, _open
from broker.gateway.rfb import ClientFilter, RfbViolation, accept_viewer, read_server_init

log = structlog.get_logger("broker.gateway.desktop")

OPEN_SECONDS = 30.0  # the agent may be starting x11vnc for the first channel
HANDSHAKE_SECONDS = 30.0  # a viewer that stalls in the handshake holds a channel: not long
DOWN_READ = 1 << 20
CLOSE_NORMAL = 1000
CLOSE_ENDED = 4000  # the session or the device's screen ended
CLOSE_VIOLATION = 4400  # the viewer sent what the broker will not pass


class DesktopTap(Protocol):
    """A listener on one connection's streams (the recorder of the technician's).

    Any method may raise ``RecordingFailed``: the connection then ends (fail-closed).
    """

    async def server_init(self, data: bytes) -> None: ...

    async def server_data(self, data: bytes) -> None: ...

    async def client_data(self, data: bytes) -> None: ...

    async def closed(self, reason: str) -> None: ...


@dataclass
class DeviceDesktop:
    """An opened desktop channel whose RFB server already sent its ServerInit."""

    process: asyncssh.SSHClientProcess[bytes]
    server_init: bytes

    def close(self) -> None:
        self.process.close()


async def open_desktop(
    conn: asyncssh.SSHClientConnection, session_id: str, *, may_input: bool
) -> DeviceDesktop:
    """A desktop channel to the device, past ClientInit/ServerInit. The agent refuses the
    request if its grant does not allow it; a device that cannot show its screen (no display,
    Wayland, x11vnc missing) says why on stderr, and that reason is the refusal's detail."""
    mode = "control" if may_input else "view"
    process = await _open(
        conn,
        f"desktop {session_id} {mode}",
        "screen",
        window=8 << 20,
        max_pktsize=128 << 10,
    )
    process.channel.set_write_buffer_limits(high=FORWARD_BUFFER)
    process.stdin.write(b"\x01")  # ClientInit: shared, so viewers do not push each other out
    try:
        server_init = await asyncio.wait_for(
            read_server_init(process.stdout.readexactly), OPEN_SECONDS
        )
    except (asyncio.IncompleteReadError, RfbViolation, TimeoutError, asyncssh.Error) as exc:
        why = ""
        with contextlib.suppress(asyncssh.Error, TimeoutError, OSError):
            why = (await asyncio.wait_for(process.stderr.read(4096), 5)).decode(errors="replace")
        process.close()
        detail = why.strip() or f"the screen channel closed ({type(exc).__name__})"
        raise ChannelRefused(f"the device cannot show its screen: {detail}") from exc
    return DeviceDesktop(process, server_init)


class _Frames:
    """The WebSocket as a byte stream for the handshake; what is left over goes on."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.buf = bytearray()

    async def next(self) -> bytes | None:
        """The next binary frame (None: the browser went away); text is a violation."""
        frame = await self.ws.receive()
        if frame.get("type") == "websocket.disconnect":
            return None
        if frame.get("text") is not None:
            raise RfbViolation("a text frame inside the RFB stream")
        data: bytes = frame.get("bytes") or b""
        return data

    async def read(self, size: int) -> bytes:
        while len(self.buf) < size:
            data = await self.next()
            if data is None:
                raise RfbViolation("the viewer left during the handshake")
            self.buf += data
        out = bytes(self.buf[:size])
        del self.buf[:size]
        return out

    def rest(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


@dataclass(eq=False)
class DesktopViewer:
    """One viewer's filtered connection to the device's screen."""

    session_id: str
    name: str
    mode: str  # control | join | watch
    may_input: bool
    device: DeviceDesktop
    taps: Sequence[DesktopTap] = ()
    filter: ClientFilter = field(init=False)
    reason: str = ""
    violation: str = ""
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.filter = ClientFilter(may_input=self.may_input)

    async def serve(self, ws: WebSocket) -> None:
        """Handshake with the browser, then relay until one side ends or :meth:`close`."""
        frames = _Frames(ws)
        code = CLOSE_NORMAL
        try:
            try:
                await asyncio.wait_for(
                    accept_viewer(frames.read, ws.send_bytes, self.device.server_init),
                    HANDSHAKE_SECONDS,
                )
            except TimeoutError:
                raise RfbViolation("the viewer did not finish the RFB handshake") from None
            for tap in self.taps:
                await tap.server_init(self.device.server_init)
            down = asyncio.create_task(self._down(ws))
            up = asyncio.create_task(self._up(frames))
            closing = asyncio.create_task(self._closing.wait())
            done, _ = await asyncio.wait({down, up, closing}, return_when=asyncio.FIRST_COMPLETED)
            for task in (down, up, closing):
                task.cancel()
            for task in (down, up):
                with contextlib.suppress(asyncio.CancelledError):
                    await task  # a violation raised by the filter surfaces here
            code = CLOSE_ENDED if down in done or closing in done else CLOSE_NORMAL
        except RecordingFailed as exc:  # fail-closed: no record, no screen
            self.reason = f"recording failed: {exc}"
            code = CLOSE_ENDED
        except RfbViolation as exc:
            self.violation = str(exc)
            self.reason = f"refused: {exc}"
            code = CLOSE_VIOLATION
        except (asyncssh.Error, OSError, RuntimeError, WebSocketDisconnect) as exc:
            self.reason = self.reason or f"connection lost: {exc}"
        finally:
            self.device.close()
            self.reason = self.reason or "the viewer left"
            for tap in self.taps:
                await tap.closed(self.reason)
            with contextlib.suppress(RuntimeError, OSError):
                await ws.close(code=code, reason=self.reason.encode()[:120].decode(errors="ignore"))

    async def _down(self, ws: WebSocket) -> None:
        stdout = self.device.process.stdout
        while data := await stdout.read(DOWN_READ):
            for tap in self.taps:
                await tap.server_data(data)
            await ws.send_bytes(data)
        self.reason = self.reason or "the device's screen closed"

    async def _up(self, frames: _Frames) -> None:
        stdin = self.device.process.stdin
        pending = frames.rest()
        while True:
            passed = self.filter.feed(pending)
            if passed:
                for tap in self.taps:
                    await tap.client_data(passed)
                stdin.write(passed)
                await stdin.drain()
            if self.filter.violation is not None:
                raise RfbViolation(self.filter.violation)
            data = await frames.next()
            if data is None:
                self.reason = self.reason or "the viewer left"
                return
            pending = data

    def close(self, reason: str) -> None:
        """End this connection (the session ended, the agent went away)."""
        self.reason = self.reason or reason
        self._closing.set()
        self.device.close()


class DesktopViewers:
    """The open desktop connections of one agent link, by session."""

    def __init__(self) -> None:
        self._by_session: dict[str, set[DesktopViewer]] = {}

    def add(self, viewer: DesktopViewer) -> None:
        self._by_session.setdefault(viewer.session_id, set()).add(viewer)

    def discard(self, viewer: DesktopViewer) -> None:
        found = self._by_session.get(viewer.session_id)
        if found is not None:
            found.discard(viewer)
            if not found:
                del self._by_session[viewer.session_id]

    def close(self, session_id: str, reason: str) -> None:
        for viewer in list(self._by_session.pop(session_id, ())):
            viewer.close(reason)

    def close_all(self, reason: str) -> None:
        for session_id in list(self._by_session):
            self.close(session_id, reason)
