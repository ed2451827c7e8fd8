"""Appends that reuse what the previous append left (``LastAppend``) and prepared batches.

The cache of stream heads and data keys is only a shortcut: whatever happens between two
appends (a rollback, another writer, an erasure, an append that failed half-way), the next
append must extend each ticket's chain from its true head and the whole log must verify.
Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from audit import schema
from audit.appender import LastAppend
from audit.checkpoint import CheckpointSigner
from audit.errors import AuditError, CanonicalError
from audit.keys import LocalFileKeyProvider
from audit.store import AuditLog, NewEvent

from .conftest import LOG_ID


def ev(stream: str, n: int) -> list[NewEvent]:
    return [NewEvent(stream, "session.event", {"n": i}) for i in range(n)]


async def seqs(log: AuditLog, engine: AsyncEngine, stream: str) -> list[int]:
    async with engine.connect() as conn:
        return [r.stream_seq for r in await log.read_stream(conn, stream)]


async def assert_verifies(log: AuditLog, engine: AsyncEngine, size: int) -> None:
    async with engine.connect() as conn:
        report = await log.verify_log(conn)
    assert report.ok, report.problem
    assert report.size == size


class Boom(Exception):
    pass


async def test_prepared_batch_appends_and_bad_events_fail_before_any_write(
    log: AuditLog, engine: AsyncEngine
) -> None:
    ready = log.prepare(ev("HD-1", 3))
    assert len(ready) == 3
    async with engine.begin() as conn:
        appended = await log.append(conn, ready)
    assert [a.stream_seq for a in appended] == [1, 2, 3]
    with pytest.raises(CanonicalError):
        log.prepare([NewEvent("HD-1", "x", {"f": 1.5})])
    with pytest.raises(AuditError):
        log.prepare([NewEvent("", "x", {})])
    async with engine.begin() as conn:
        with pytest.raises(CanonicalError):
            await log.append(conn, [*ev("HD-2", 1), NewEvent("HD-2", "x", {"f": 0.1})])
    assert await seqs(log, engine, "HD-2") == []
    await assert_verifies(log, engine, 3)


async def test_rolled_back_append_is_not_reused(log: AuditLog, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await log.append(conn, ev("HD-1", 2))

    async def rolled_back() -> None:
        async with engine.begin() as conn:
            await log.append(conn, ev("HD-1", 2) + ev("HD-9", 1))
            raise Boom

    with pytest.raises(Boom):
        await rolled_back()
    async with engine.begin() as conn:
        appended = await log.append(conn, ev("HD-1", 1) + ev("HD-9", 1))
    assert [(a.position, a.stream_seq) for a in appended] == [(2, 3), (3, 1)]
    assert await seqs(log, engine, "HD-1") == [1, 2, 3]
    await assert_verifies(log, engine, 4)


async def test_another_writer_in_between(
    log: AuditLog, engine: AsyncEngine, keys: LocalFileKeyProvider, signer: CheckpointSigner
) -> None:
    other = AuditLog(log_id=LOG_ID, keys=keys, signer=signer)
    async with engine.begin() as conn:
        await log.append(conn, ev("HD-1", 2))
    async with engine.begin() as conn:
        await other.append(conn, ev("HD-1", 2) + ev("HD-2", 1))
    async with engine.begin() as conn:
        appended = await log.append(conn, ev("HD-1", 1) + ev("HD-2", 1))
    assert [a.stream_seq for a in appended] == [5, 2]
    async with engine.connect() as conn:
        stream = await log.read_stream(conn, "HD-2")
    assert [r.payload for r in stream] == [{"n": 0}, {"n": 0}]  # both keys readable
    await assert_verifies(log, engine, 7)


async def test_erasure_then_append_uses_a_new_key(log: AuditLog, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        first = await log.append(conn, ev("HD-1", 2))
    async with engine.begin() as conn:
        await log.erase_stream(conn, "HD-1", actor={"user": "auditor"})
    async with engine.begin() as conn:
        await log.append(conn, ev("HD-1", 1))
    async with engine.connect() as conn:
        stream = await log.read_stream(conn, "HD-1")
    assert [r.stream_seq for r in stream] == [1, 2, 3, 4]
    assert [r.erased for r in stream] == [True, True, False, False]
    assert stream[3].payload == {"n": 0}
    assert first[0].stream == "HD-1"
    await assert_verifies(log, engine, 5)  # and the erasure's record in the system stream


async def test_append_failing_half_way_leaves_no_stale_heads(
    log: AuditLog, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        await log.append(conn, ev("HD-1", 2))
    # A row squatting on the next position makes the next insert fail after sealing.
    squatter = {
        "position": 2,
        "record_id": "squatter",
        "stream": "HD-X",
        "stream_seq": 1,
        "event_type": "x",
        "occurred_at_us": 0,
        "key_id": "k",
        "payload_size": 0,
        "nonce": b"n" * 12,
        "ciphertext": b"c",
        "prev_hash": b"\0" * 32,
        "leaf_hash": b"\0" * 32,
    }
    async with engine.begin() as conn:
        await conn.execute(insert(schema.records).values(**squatter))
    with pytest.raises(Exception, match=r"(?i)unique|duplicate|constraint"):
        async with engine.begin() as conn:
            await log.append(conn, ev("HD-1", 1))
    async with engine.begin() as conn:
        await conn.execute(delete(schema.records).where(schema.records.c.record_id == "squatter"))
    async with engine.begin() as conn:
        appended = await log.append(conn, ev("HD-1", 1))
    assert [(a.position, a.stream_seq) for a in appended] == [(2, 3)]
    await assert_verifies(log, engine, 3)


async def test_cache_is_bounded(log: AuditLog, engine: AsyncEngine) -> None:
    last = LastAppend()
    last.MAX_STREAMS = 2
    log._last = last  # a small bound, to see it forget
    async with engine.begin() as conn:
        await log.append(conn, ev("HD-1", 1) + ev("HD-2", 1) + ev("HD-3", 1))
    assert last.size == -1
    assert not last.heads
    async with engine.begin() as conn:
        await log.append(conn, ev("HD-1", 1) + ev("HD-2", 1))
    assert last.size == 5
    assert set(last.heads) == {"HD-1", "HD-2"}
    assert await seqs(log, engine, "HD-2") == [1, 2]
    await assert_verifies(log, engine, 5)


async def test_sqlite_transaction_not_begun_takes_the_lock_through_sqlalchemy(
    log: AuditLog, tmp_path: Path
) -> None:
    # pysqlite's default mode begins a transaction only at the first write: the driver
    # sees no transaction yet, so the appender writes its lock through SQLAlchemy.
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(schema.metadata.create_all)
        for _ in range(2):
            async with engine.begin() as conn:
                await log.append(conn, ev("HD-1", 2))
        assert await seqs(log, engine, "HD-1") == [1, 2, 3, 4]
        await assert_verifies(log, engine, 4)
    finally:
        await engine.dispose()
