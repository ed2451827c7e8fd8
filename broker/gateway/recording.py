"""Terminal recordings of agent shells, sealed into the ticket's audit stream as they happen.

The relay writes to a :class:`Recorder`; :func:`open_recorder` binds one to
``audit.recording.RecordingWriter`` on the ticket's stream (``ticket.ref``), so every chunk is
an encrypted, hash-chained record in the same log as the session's events. Each chunk is
sealed in its own transaction (``begin``): what the technician saw is durable within
``chunk_seconds`` even if the broker dies. A chunk that cannot be sealed raises
:class:`audit.recording.RecordingFailed`, and the relay stops the session (fail-closed).

Reading recordings back (listing, replay) lives here too: it is the same record format.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from audit.errors import AuditError
from audit.recording import CHUNK, ENDED, STARTED, Begin, Cast, RecordingFailed, RecordingWriter
from audit.recording import read_cast as audit_read_cast
from audit.store import AuditLog
from broker.errors import AuditFailure, NotFound
from broker.sessions.repository import SessionRecord

__all__ = [
    "AuditRecorder",
    "Recorder",
    "RecordingFailed",
    "RecordingSummary",
    "list_recordings",
    "open_recorder",
    "read_cast",
]


class Recorder(Protocol):
    """What the relay needs; every method may raise ``RecordingFailed``."""

    recording_id: str

    async def output(self, data: bytes) -> None: ...

    async def input(self, data: bytes) -> None: ...

    async def flush_if_due(self) -> None: ...

    async def close(self, reason: str) -> None: ...


class AuditRecorder:
    """Serialises the pump, the typing viewers and the idle timer onto one writer.

    ``RecordingWriter`` is not re-entrant: two overlapping flushes would seal two chunks with
    the same index, so every call holds the lock while it seals.
    """

    def __init__(self, writer: RecordingWriter) -> None:
        self.writer = writer
        self.recording_id = writer.recording_id
        self._lock = asyncio.Lock()

    async def output(self, data: bytes) -> None:
        async with self._lock:
            await self.writer.output(data)

    async def input(self, data: bytes) -> None:
        async with self._lock:
            await self.writer.input(data)

    async def flush_if_due(self) -> None:
        async with self._lock:
            if not self.writer.closed:
                await self.writer.flush_if_due()

    async def close(self, reason: str) -> None:
        async with self._lock:
            await self.writer.close(reason=reason)


async def open_recorder(
    log: AuditLog,
    begin: Begin,
    record: SessionRecord,
    *,
    chunk_seconds: float,
    size: tuple[int, int] = (80, 24),
) -> AuditRecorder:
    """Start a recording of ``record``'s terminal; no recording, no terminal (fail-closed)."""
    session = record.session
    writer = RecordingWriter(
        log,
        begin,
        stream=record.ticket.ref,
        recording_id=f"{session.id}.{uuid.uuid4().hex[:8]}",
        width=size[0],
        height=size[1],
        meta={
            "session_id": session.id,
            "device_id": record.device.id,
            "technician": record.technician.display_name,
        },
        max_chunk_seconds=chunk_seconds,
    )
    try:
        await writer.start()
    except RecordingFailed as exc:
        raise AuditFailure(f"the terminal recording could not be started: {exc}") from exc
    return AuditRecorder(writer)


@dataclass(frozen=True)
class RecordingSummary:
    recording_id: str
    session_id: str
    started_at: str
    ended_at: str | None
    chunks: int
    end_reason: str | None
    format: str = "asciicast"  # or "rfb": a desktop recording (broker.gateway.desktop_recording)

    def as_dict(self) -> dict[str, Any]:
        return {
            "recording_id": self.recording_id,
            "session_id": self.session_id,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "chunks": self.chunks,
            "sealed": self.ended_at is not None,
            "end_reason": self.end_reason,
            "format": self.format,
        }


async def list_recordings(
    log: AuditLog, conn: AsyncConnection, stream: str, session_id: str
) -> list[RecordingSummary]:
    """The recordings of one session, oldest first, from the ticket's records."""
    started: dict[str, dict[str, Any]] = {}
    for rec in await log.read_stream(conn, stream):
        payload = rec.payload
        if payload is None:
            continue
        rid = str(payload.get("recording_id", ""))
        if rec.event_type == STARTED and payload.get("session_id") == session_id:
            started[rid] = {
                "at": rec.occurred_at.isoformat(),
                "chunks": 0,
                "end": None,
                "format": str(payload.get("format", "asciicast")),
            }
        elif rid in started and rec.event_type == CHUNK:
            started[rid]["chunks"] += 1
        elif rid in started and rec.event_type == ENDED:
            started[rid]["end"] = (rec.occurred_at.isoformat(), str(payload.get("reason", "")))
    return [
        RecordingSummary(
            recording_id=rid,
            session_id=session_id,
            started_at=info["at"],
            ended_at=info["end"][0] if info["end"] else None,
            chunks=info["chunks"],
            end_reason=info["end"][1] if info["end"] else None,
            format=info["format"],
        )
        for rid, info in started.items()
    ]


async def read_cast(log: AuditLog, conn: AsyncConnection, stream: str, recording_id: str) -> Cast:
    """The asciicast of one recording, and whether it is whole."""
    try:
        return await audit_read_cast(log, conn, stream, recording_id)
    except AuditError as exc:
        raise NotFound(str(exc)) from exc
