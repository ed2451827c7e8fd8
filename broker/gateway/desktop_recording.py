"""Desktop recordings: the technician's RFB stream, sealed into the ticket's chain in chunks.

The recorder is a :class:`~broker.gateway.rfb_relay.DesktopTap` on the technician's
connection. It writes the same three record types as the terminal recorder
(``recording.started``, ``recording.chunk``, ``recording.ended``), marked
``"format": "rfb"``, in the ticket's stream, each in its own transaction:

- ``recording.started`` carries the ServerInit the device's server sent (size, pixel format,
  name): with it, a viewer can decode the rest.
- ``recording.chunk`` carries consecutive server→client bytes as frames (milliseconds since
  ServerInit, length, bytes), zlib-compressed and base64-encoded, cut by size
  (``MAX_CHUNK_BYTES``) and time (the gateway's chunk interval). Input is recorded as
  metadata only — per second: how many key, pointer and clipboard messages passed — unless
  the device group's policy records input, in which case the client messages are frames too
  (direction 1).
- ``recording.ended`` carries the chunk count, the byte count and the SHA-256 of ServerInit
  plus every server byte, so a cut-off or altered tail shows.

The chunks are records of the chain, encrypted under the ticket's key: bundles carry them and
erasure (crypto-shredding the ticket's key) removes them like any other record.

Fail-closed: a chunk (or the start record) that cannot be sealed raises
:class:`~audit.recording.RecordingFailed`; the relay ends the viewer's connection and
``on_failure`` seals ``recording.gap`` and fails the session (``Gateway.fail_session``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import struct
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from audit.recording import CHUNK, ENDED, STARTED, Begin, RecordingFailed
from audit.sealing import NewEvent
from audit.store import AuditLog
from broker.errors import AuditFailure, NotFound
from broker.sessions.repository import SessionRecord

log = structlog.get_logger("broker.gateway.desktop_recording")

FORMAT = "rfb"
MAX_CHUNK_BYTES = 512 * 1024  # raw bytes per chunk, before compression
TICK_SECONDS = 0.5
# Frame header: milliseconds since ServerInit, direction (0 server, 1 client), length.
FRAME = struct.Struct(">IBI")
KEY, POINTER, CUT = 4, 5, 6
# Client message sizes (RFC 6143 §7.5), to count input in the filter's whole messages.
FIXED = {0: 20, 3: 10, KEY: 8, POINTER: 6}


def input_counts(data: bytes) -> tuple[int, int, int]:
    """Key, pointer and clipboard messages in ``data`` (whole messages, as the filter passes)."""
    keys = pointer = cut = pos = 0
    while pos < len(data):
        kind = data[pos]
        if kind in FIXED:
            size = FIXED[kind]
        elif kind == 2 and pos + 4 <= len(data):
            size = 4 + 4 * int.from_bytes(data[pos + 2 : pos + 4], "big")
        elif kind == CUT and pos + 8 <= len(data):
            size = 8 + int.from_bytes(data[pos + 4 : pos + 8], "big")
        else:
            break  # the filter passes nothing else; stop rather than guess
        keys += kind == KEY
        pointer += kind == POINTER
        cut += kind == CUT
        pos += size
    return keys, pointer, cut


class DesktopRecorder:
    """Buffers one connection's stream and seals it in chunks (one writer: calls hold a lock)."""

    def __init__(
        self,
        log_: AuditLog,
        begin: Begin,
        record: SessionRecord,
        *,
        chunk_seconds: float,
        record_input: bool,
        on_failure: Callable[[str, str], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
        max_chunk_bytes: int = MAX_CHUNK_BYTES,
    ) -> None:
        self.log, self.begin = log_, begin
        self.stream = record.ticket.ref
        self.session_id = record.session.id
        self.meta = {
            "session_id": record.session.id,
            "device_id": record.device.id,
            "technician": record.technician.display_name,
        }
        self.recording_id = f"{record.session.id}.{uuid.uuid4().hex[:8]}"
        self.chunk_seconds, self.max_chunk_bytes = chunk_seconds, max_chunk_bytes
        self.record_input = record_input
        self.on_failure = on_failure
        self.clock = clock
        self._lock = asyncio.Lock()
        self._frames = bytearray()
        self._input: dict[int, list[int]] = {}  # second → [keys, pointer, clipboard]
        self._t0 = self._chunk_started = 0.0
        self._index = self._bytes = 0
        self._digest = hashlib.sha256()
        self._ticker: asyncio.Task[None] | None = None
        self.started = self.ended = False
        self.failure: str | None = None

    def _ms(self) -> int:
        return round((self.clock() - self._t0) * 1000)

    async def _seal(self, event_type: str, payload: dict[str, Any]) -> None:
        try:
            async with self.begin() as conn:
                await self.log.append(conn, [NewEvent(self.stream, event_type, payload)])
        except Exception as exc:
            await self._fail(f"recording {self.recording_id}: {exc}")
            raise RecordingFailed(f"recording {self.recording_id}: {exc}") from exc

    async def _fail(self, why: str) -> None:
        """Once: the gap and the failed session, in their own task so a cancel cannot stop them."""
        if self.failure is not None:
            return
        self.failure = f"recording failed: {why}"
        self.ended = True
        log.error("gateway.desktop_recording_failed", session_id=self.session_id, why=why[:300])
        await asyncio.shield(asyncio.ensure_future(self._report(self.failure)))

    async def _report(self, why: str) -> None:
        try:
            await self.on_failure(why, self.recording_id)
        except Exception:
            log.critical("gateway.gap_not_sealed", session_id=self.session_id, exc_info=True)
            raise

    def _check(self) -> None:
        if self.failure is not None or not self.started or self.ended:
            raise RecordingFailed(self.failure or "the desktop recording is not running")

    # DesktopTap -------------------------------------------------------------------------

    async def server_init(self, data: bytes) -> None:
        width, height = struct.unpack_from(">HH", data)
        async with self._lock:
            self._t0 = self._chunk_started = self.clock()
            self._digest.update(data)
            await self._seal(
                STARTED,
                {
                    "recording_id": self.recording_id,
                    "format": FORMAT,
                    "server_init": base64.b64encode(data).decode(),
                    "width": width,
                    "height": height,
                    "input": "recorded" if self.record_input else "counted",
                    **self.meta,
                },
            )
            self.started = True
        self._ticker = asyncio.create_task(self._tick(), name=f"desktop-rec-{self.session_id}")

    async def server_data(self, data: bytes) -> None:
        async with self._lock:
            self._check()
            self._digest.update(data)
            self._bytes += len(data)
            self._add(0, data)
            if self._due():
                await self._flush()

    async def client_data(self, data: bytes) -> None:
        async with self._lock:
            self._check()
            if self.record_input:
                self._add(1, data)
            else:
                keys, pointer, cut = input_counts(data)
                if keys or pointer or cut:
                    second = self._ms() // 1000
                    counts = self._input.setdefault(second, [0, 0, 0])
                    counts[0] += keys
                    counts[1] += pointer
                    counts[2] += cut
            if self._due():
                await self._flush()

    async def _close(self, reason: str) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError, RecordingFailed):
                await self._ticker
        async with self._lock:
            if self.ended or not self.started:
                return
            await self._flush()
            self.ended = True
            await self._seal(
                ENDED,
                {
                    "recording_id": self.recording_id,
                    "chunks": self._index,
                    "bytes": self._bytes,
                    "sha256": self._digest.hexdigest(),
                    "reason": reason,
                },
            )

    async def closed(self, reason: str) -> None:
        with contextlib.suppress(RecordingFailed):  # the gap is sealed by on_failure
            await self._close(reason)

    # ------------------------------------------------------------------------------------

    def _add(self, direction: int, data: bytes) -> None:
        self._frames += FRAME.pack(self._ms(), direction, len(data))
        self._frames += data

    def _due(self) -> bool:
        pending = bool(self._frames or self._input)
        return pending and (
            len(self._frames) >= self.max_chunk_bytes
            or self.clock() - self._chunk_started >= self.chunk_seconds
        )

    async def _tick(self) -> None:
        """Seal what a quiet screen showed, so it is durable within the chunk interval."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            async with self._lock:
                if self.ended:
                    return
                if self._due():
                    await self._flush()

    async def _flush(self) -> None:
        if not (self._frames or self._input):
            return
        frames, counts = bytes(self._frames), self._input
        self._frames, self._input = bytearray(), {}
        await self._seal(
            CHUNK,
            {
                "recording_id": self.recording_id,
                "index": self._index,
                "frames": base64.b64encode(zlib.compress(frames, 1)).decode(),
                "input": [[s, *c] for s, c in sorted(counts.items())],
            },
        )
        self._index += 1
        self._chunk_started = self.clock()


@dataclass
class RfbRecording:
    """A desktop recording read back: what the browser player needs, and whether it is whole."""

    recording_id: str
    server_init: bytes
    width: int
    height: int
    frames: list[tuple[int, int, bytes]] = field(default_factory=list)  # (ms, direction, bytes)
    input: list[list[int]] = field(default_factory=list)  # [second, keys, pointer, clipboard]
    chunks: int = 0
    complete: bool = False
    problem: str | None = None

    def player_data(self) -> str:
        """The JSON the page embeds: ServerInit, the server stream, and where each frame ends."""
        server = [(ms, data) for ms, direction, data in self.frames if direction == 0]
        marks, end = [], 0
        for ms, data in server:
            end += len(data)
            marks.append([ms, end])
        return json.dumps(
            {
                "serverInit": base64.b64encode(self.server_init).decode(),
                "data": base64.b64encode(b"".join(d for _, d in server)).decode(),
                "marks": marks,
                "width": self.width,
                "height": self.height,
            }
        )


def _frames(blob: bytes) -> list[tuple[int, int, bytes]]:
    out, pos = [], 0
    while pos < len(blob):
        ms, direction, size = FRAME.unpack_from(blob, pos)
        pos += FRAME.size
        out.append((ms, direction, blob[pos : pos + size]))
        pos += size
    return out


async def _records(
    log_: AuditLog, conn: AsyncConnection, stream: str, recording_id: str
) -> tuple[dict[str, Any] | None, dict[int, dict[str, Any]], dict[str, Any] | None]:
    """The start record, the chunks by index and the end record of one recording."""
    start: dict[str, Any] | None = None
    chunks: dict[int, dict[str, Any]] = {}
    end: dict[str, Any] | None = None
    for record in await log_.read_stream(conn, stream):
        payload = record.payload
        if payload is None or payload.get("recording_id") != recording_id:
            continue
        if record.event_type == STARTED:
            start = payload
        elif record.event_type == CHUNK:
            chunks[int(payload["index"])] = payload
        elif record.event_type == ENDED:
            end = payload
    return start, chunks, end


async def read_rfb(
    log_: AuditLog, conn: AsyncConnection, stream: str, recording_id: str
) -> RfbRecording:
    """Reassemble a desktop recording from the ticket's records and say whether it is whole."""
    start, chunks, end = await _records(log_, conn, stream, recording_id)
    if start is None or start.get("format") != FORMAT:
        raise NotFound(f"no desktop recording {recording_id} (or its key was erased)")
    init = base64.b64decode(start["server_init"])
    found = RfbRecording(recording_id, init, int(start["width"]), int(start["height"]))
    digest = hashlib.sha256(init)
    size = 0
    ordered = [chunks[i] for i in range(len(chunks)) if i in chunks]
    try:
        for chunk in ordered:
            for ms, direction, data in _frames(zlib.decompress(base64.b64decode(chunk["frames"]))):
                found.frames.append((ms, direction, data))
                if direction == 0:
                    digest.update(data)
                    size += len(data)
            found.input.extend(chunk.get("input") or [])
    except (zlib.error, struct.error, ValueError) as exc:
        raise AuditFailure(f"recording {recording_id} cannot be read: {exc}") from exc
    found.chunks = len(ordered)
    if len(ordered) != len(chunks):
        found.problem = "chunks are missing"
    elif end is None:
        found.problem = "the recording has no end record: it was cut off"
    elif (end.get("chunks"), end.get("bytes"), end.get("sha256")) != (
        len(ordered),
        size,
        digest.hexdigest(),
    ):
        found.problem = "the recording does not match its end record"
    found.complete = found.problem is None
    return found
