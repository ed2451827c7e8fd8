"""Terminal recordings as asciicast v2, sealed into the audit log chunk by chunk.

A recording is a ``recording.started`` record (the asciicast header), ``recording.chunk``
records (consecutive event lines: at most ``max_chunk_bytes`` or ``max_chunk_seconds`` each,
never split inside an event line) and a ``recording.ended`` record with the count and SHA-256
of the whole cast, so a missing or truncated tail shows. Every chunk is an encrypted record in
the ticket's chain and the global tree, written as it happens: a failure to write raises
:class:`RecordingFailed` and the caller must stop the session (fail closed).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from audit.errors import AuditError
from audit.sealing import NewEvent
from audit.store import AuditLog

STARTED, CHUNK, ENDED = "recording.started", "recording.chunk", "recording.ended"
MAX_CHUNK_BYTES = 64 * 1024
MAX_CHUNK_SECONDS = 5.0
# Event data is cut so that one event line (ASCII: json.dumps escapes the rest) stays at most
# MAX_EVENT_BYTES, well inside a chunk.
MAX_EVENT_BYTES = 16 * 1024
MAX_EVENT_CHARS = 8 * 1024

Begin = Callable[[], AbstractAsyncContextManager[AsyncConnection]]


def _event_lines(prefix: str, text: str) -> list[str]:
    """``prefix`` + JSON string + ``]``, halving ``text`` until each line fits."""
    line = f"{prefix}{json.dumps(text)}]"
    if len(line) <= MAX_EVENT_BYTES:
        return [line]
    half = len(text) // 2
    return _event_lines(prefix, text[:half]) + _event_lines(prefix, text[half:])


class RecordingFailed(AuditError):
    """A chunk could not be sealed; the session it records must stop."""


class RecordingWriter:
    """Buffers asciicast events and seals them in chunks through ``log``."""

    def __init__(
        self,
        log: AuditLog,
        begin: Begin,
        *,
        stream: str,
        recording_id: str,
        width: int = 80,
        height: int = 24,
        meta: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_chunk_bytes: int = MAX_CHUNK_BYTES,
        max_chunk_seconds: float = MAX_CHUNK_SECONDS,
    ) -> None:
        self.log, self.begin, self.stream, self.recording_id = log, begin, stream, recording_id
        self.header = {"version": 2, "width": width, "height": height}
        self.meta = dict(meta or {})
        self.clock = clock
        self.max_chunk_bytes, self.max_chunk_seconds = max_chunk_bytes, max_chunk_seconds
        self._decoders = {
            kind: codecs.getincrementaldecoder("utf-8")(errors="replace") for kind in "oi"
        }
        self._lines: list[str] = []
        self._size = 0
        self._chunk_started = 0.0
        self._t0 = 0.0
        self._index = 0
        self._events = 0
        self._digest = hashlib.sha256()
        self.started = self.closed = False

    async def _seal(self, event_type: str, payload: dict[str, Any]) -> None:
        try:
            async with self.begin() as conn:
                await self.log.append(conn, [NewEvent(self.stream, event_type, payload)])
        except Exception as exc:
            raise RecordingFailed(f"recording {self.recording_id}: {exc}") from exc

    async def start(self) -> None:
        now = datetime.now(UTC)
        self.header["timestamp"] = int(now.timestamp())
        self._t0 = self._chunk_started = self.clock()
        header_line = json.dumps(self.header, sort_keys=True)
        self._digest.update(header_line.encode() + b"\n")
        await self._seal(
            STARTED, {"recording_id": self.recording_id, "header": header_line, **self.meta}
        )
        self.started = True

    def _event_lines(self, kind: str, data: bytes, final: bool = False) -> list[str]:
        if not self.started or self.closed:
            raise RecordingFailed("recording is not running")
        text = self._decoders[kind].decode(data, final)
        if not text:
            return []
        # asciicast v2 times are float seconds; we keep microsecond precision in text form.
        prefix = f"[{self.clock() - self._t0:.6f}, {json.dumps(kind)}, "
        lines: list[str] = []
        for i in range(0, len(text), MAX_EVENT_CHARS):
            lines.extend(_event_lines(prefix, text[i : i + MAX_EVENT_CHARS]))
        return lines

    async def _push(self, lines: list[str]) -> None:
        for line in lines:
            size = len(line) + 1  # event lines are ASCII (json.dumps escapes the rest)
            if self._lines and self._size + size > self.max_chunk_bytes:
                await self.flush()  # the line goes whole into the next chunk
            self._lines.append(line)
            self._size += size
            self._events += 1
        if self._due():
            await self.flush()

    def _due(self) -> bool:
        return bool(self._lines) and (
            self._size >= self.max_chunk_bytes
            or self.clock() - self._chunk_started >= self.max_chunk_seconds
        )

    async def output(self, data: bytes) -> None:
        await self._push(self._event_lines("o", data))

    async def input(self, data: bytes) -> None:
        await self._push(self._event_lines("i", data))

    async def flush_if_due(self) -> None:
        """Call from a timer so quiet sessions still seal their last output within seconds."""
        if self._due():
            await self.flush()

    async def flush(self) -> None:
        if not self._lines:
            return
        lines = self._lines
        self._lines, self._size = [], 0
        body = "\n".join(lines) + "\n"
        self._digest.update(body.encode())
        await self._seal(
            CHUNK, {"recording_id": self.recording_id, "index": self._index, "lines": body}
        )
        self._index += 1
        self._chunk_started = self.clock()

    async def close(self, *, reason: str) -> None:
        if self.closed or not self.started:
            return
        for kind in "oi":
            await self._push(self._event_lines(kind, b"", final=True))
        await self.flush()
        self.closed = True
        await self._seal(
            ENDED,
            {
                "recording_id": self.recording_id,
                "chunks": self._index,
                "events": self._events,
                "sha256": self._digest.hexdigest(),
                "reason": reason,
            },
        )


@dataclass(frozen=True)
class Cast:
    text: str  # the asciicast v2 file
    complete: bool  # an end record is present and matches what was read
    chunks: int
    problem: str | None = None


async def read_cast(log: AuditLog, conn: AsyncConnection, stream: str, recording_id: str) -> Cast:
    """Reassemble a recording from the ticket's records and say whether it is whole."""
    header: str | None = None
    chunks: dict[int, str] = {}
    end: dict[str, Any] | None = None
    for record in await log.read_stream(conn, stream):
        payload = record.payload
        if payload is None or payload.get("recording_id") != recording_id:
            continue
        if record.event_type == STARTED:
            header = str(payload["header"])
        elif record.event_type == CHUNK:
            chunks[int(payload["index"])] = str(payload["lines"])
        elif record.event_type == ENDED:
            end = payload
    if header is None:
        raise AuditError(f"no recording {recording_id} in {stream!r} (or its key was erased)")
    ordered = [chunks[i] for i in range(len(chunks)) if i in chunks]
    text = header + "\n" + "".join(ordered)
    problem = None
    if len(ordered) != len(chunks):
        problem = "chunks are missing"
    elif end is None:
        problem = "the recording has no end record: it was cut off"
    elif end.get("chunks") != len(ordered) or (
        end.get("sha256") != hashlib.sha256(text.encode()).hexdigest()
    ):
        problem = "the recording does not match its end record"
    return Cast(text, problem is None, len(ordered), problem)
