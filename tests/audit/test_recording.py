"""Recordings: asciicast v2 chunks sealed into the log, an end record, truncation detected."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit import schema
from audit.errors import AuditError
from audit.recording import (
    CHUNK,
    ENDED,
    MAX_EVENT_BYTES,
    RecordingFailed,
    RecordingWriter,
    read_cast,
)
from audit.store import AuditLog, NewEvent

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def writer(log: AuditLog, engine: AsyncEngine, clock: Clock, **kw: object) -> RecordingWriter:
    return RecordingWriter(
        log,
        engine.begin,
        stream="HD-1",
        recording_id="rec-1",
        clock=clock,
        meta={"s": "x"},
        **kw,  # type: ignore[arg-type]
    )


async def chunk_payloads(log: AuditLog, engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return [
            str(r.payload["lines"])
            for r in await log.read_stream(conn, "HD-1")
            if r.event_type == CHUNK and r.payload is not None
        ]


async def test_chunking_by_size_time_and_utf8(log: AuditLog, engine: AsyncEngine) -> None:
    clock = Clock()
    w = writer(log, engine, clock, max_chunk_bytes=200)
    await w.start()
    await w.output("héllo ".encode())
    snowman = "☃".encode()
    await w.output(b"a" + snowman[:1])  # a multibyte character split across two writes
    await w.output(snowman[1:] + b"\r\n")
    await w.input(b"ls\r")
    clock.now += 1
    for i in range(6):
        await w.output(f"line {i} {'x' * 40}\r\n".encode())
    clock.now += 5  # a quiet session still seals within max_chunk_seconds
    await w.output(b"late")
    await w.output(b" and quiet")
    clock.now += 6
    await w.flush_if_due()  # sealed by the timer, no new output needed
    await w.flush_if_due()  # nothing due
    await w.flush()  # nothing buffered
    await w.output(b"tail\xe2\x98")  # an incomplete character at the end
    await w.close(reason="ended")
    await w.close(reason="again")  # idempotent
    with pytest.raises(RecordingFailed, match="not running"):
        await w.output(b"after")
    chunks = await chunk_payloads(log, engine)
    assert len(chunks) >= 3
    assert all(len(c.encode()) <= 200 for c in chunks)
    events = [json.loads(line) for c in chunks for line in c.splitlines()]
    assert all(len(e) == 3 and e[1] in "oi" for e in events)
    output = "".join(e[2] for e in events if e[1] == "o")
    assert "a☃\r\n" in output
    assert output.startswith("héllo ")
    assert output.endswith("tail\ufffd")
    async with engine.connect() as conn:
        cast = await read_cast(log, conn, "HD-1", "rec-1")
    assert cast.complete
    assert cast.problem is None
    assert cast.chunks == len(chunks)
    header = json.loads(cast.text.splitlines()[0])
    assert header["version"] == 2
    assert header["width"] == 80


async def test_large_output_never_splits_lines(log: AuditLog, engine: AsyncEngine) -> None:
    w = writer(log, engine, Clock())
    await w.start()
    await w.output(("\U0001f600" * 30_000).encode())  # escapes to 12 bytes per character
    await w.output(b"y" * 70_000)
    await w.close(reason="done")
    chunks = await chunk_payloads(log, engine)
    assert all(len(c.encode()) <= 64 * 1024 for c in chunks)
    for c in chunks:
        for line in c.splitlines():
            assert len(line) <= MAX_EVENT_BYTES
            json.loads(line)
    async with engine.connect() as conn:
        assert (await read_cast(log, conn, "HD-1", "rec-1")).complete


async def _recorded(log: AuditLog, engine: AsyncEngine) -> None:
    clock = Clock()
    w = writer(log, engine, clock, max_chunk_bytes=64)
    await w.start()
    for i in range(4):
        await w.output(f"output number {i} is long enough\r\n".encode())
    await w.close(reason="ended")
    async with engine.begin() as conn:  # noise in the same ticket
        await log.append(
            conn,
            [
                NewEvent("HD-1", "note", {"text": "unrelated"}),
                NewEvent("HD-1", "note", {"recording_id": "rec-1", "text": "mentions it"}),
            ],
        )


async def _delete(engine: AsyncEngine, log: AuditLog, event_type: str, which: int) -> None:
    async with engine.begin() as conn:
        target = [r for r in await log.records(conn, stream="HD-1") if r.event_type == event_type]
        await conn.execute(
            delete(schema.records).where(schema.records.c.record_id == target[which].record_id)
        )


@pytest.mark.parametrize(
    ("event_type", "which", "problem"),
    [
        (ENDED, 0, "no end record"),
        (CHUNK, 1, "chunks are missing"),
        (CHUNK, -1, "does not match its end record"),
    ],
)
async def test_truncation_is_detected(
    log: AuditLog, engine: AsyncEngine, event_type: str, which: int, problem: str
) -> None:
    await _recorded(log, engine)
    async with engine.connect() as conn:
        assert (await read_cast(log, conn, "HD-1", "rec-1")).complete
    await _delete(engine, log, event_type, which)
    async with engine.connect() as conn:
        cast = await read_cast(log, conn, "HD-1", "rec-1")
        assert not cast.complete
        assert problem in (cast.problem or "")
        with pytest.raises(AuditError, match="no recording rec-2"):
            await read_cast(log, conn, "HD-1", "rec-2")


async def test_failing_begin_raises_recording_failed(log: AuditLog, engine: AsyncEngine) -> None:
    @asynccontextmanager
    async def broken() -> AsyncIterator[AsyncConnection]:
        raise OSError("disk full")
        yield  # pragma: no cover - never reached

    w = RecordingWriter(log, broken, stream="HD-1", recording_id="rec-x")
    with pytest.raises(RecordingFailed, match="rec-x: disk full"):
        await w.start()
    assert not w.started
    await w.close(reason="never started")  # nothing to do
    with pytest.raises(RecordingFailed, match="not running"):
        await w.input(b"x")
    ok = writer(log, engine, Clock())
    await ok.start()
    ok.begin = broken
    await ok.output(b"data")
    with pytest.raises(RecordingFailed, match="disk full"):
        await ok.close(reason="x")
