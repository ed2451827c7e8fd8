"""Verifying a live log: ``verify_database(..., snapshot=True)`` reads checkpoints, tree state,
count and rows in one snapshot of its own connection, so appends committed while it reads
neither fail a sound log nor slip into the report. Without the snapshot, on PostgreSQL (read
committed), the same interleaving makes the verifier read rows newer than the checkpoints and
tree state it read first, and a sound log fails: the test can tell the two apart.

The interleaving is made deterministic: the verifier's first page read first lets another
connection append and commit. On SQLite that append also shows the verifier holds no write
lock (it would wait out the 30 s busy timeout and fail).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit import dbverify
from audit.store import AuditLog, NewEvent
from audit.verify import VerifyReport


def ev(n: int, tag: str = "") -> list[NewEvent]:
    return [NewEvent(f"HD-{tag}{i % 3}", "session.event", {"n": i}) for i in range(n)]


async def seed(log: AuditLog, engine: AsyncEngine, batches: int = 6) -> None:
    for _ in range(batches):
        async with engine.begin() as conn:
            await log.append(conn, ev(5))


def append_during_first_read(
    monkeypatch: pytest.MonkeyPatch, log: AuditLog, engine: AsyncEngine, events: int
) -> list[int]:
    """Patch the verifier's page reader: before its first page, commit ``events`` more."""
    calls: list[int] = []
    real = dbverify.read_rows

    async def reading(conn: AsyncConnection, start: int, count: int, **kw: Any) -> Sequence[Any]:
        if not calls:
            async with engine.begin() as other:
                await log.append(other, ev(events, "late-"))
        calls.append(start)
        return await real(conn, start, count, **kw)

    monkeypatch.setattr(dbverify, "read_rows", reading)
    return calls


async def verify(log: AuditLog, engine: AsyncEngine, **kw: Any) -> VerifyReport:
    async with engine.connect() as conn:
        return await dbverify.verify_database(conn, log.signer.verifier, batch=7, **kw)


async def test_snapshot_verifies_a_log_appended_to_meanwhile(
    log: AuditLog, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(log, engine)
    calls = append_during_first_read(monkeypatch, log, engine, 4)
    report = await verify(log, engine, snapshot=True)
    assert report.ok, report.problem
    assert report.size == 30  # the snapshot's log, not the 4 appended after it began
    assert report.checkpoint_size == 30
    assert calls[0] == 0
    async with engine.connect() as conn:  # the late events were committed, and verify too
        assert await log.size(conn) == 34
        assert (await log.verify_log(conn, snapshot=True)).ok


async def test_snapshot_with_worker_processes(
    log: AuditLog, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(log, engine)
    append_during_first_read(monkeypatch, log, engine, 4)  # the parent's read after the workers
    report = await verify(log, engine, snapshot=True, processes=2, segment=8)
    assert report.ok, report.problem
    assert report.size == 30


# SQLite is left out: the broker's engine holds the write lock, so no append can interleave.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_without_snapshot_a_concurrent_append_fails_a_sound_log_on_postgres(
    log: AuditLog, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(log, engine)
    append_during_first_read(monkeypatch, log, engine, 4)
    report = await verify(log, engine)
    assert not report.ok  # what the snapshot prevents


async def test_in_memory_sqlite_reads_through_the_callers_connection(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from audit import schema

    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(schema.metadata.create_all)
            await log.append(conn, ev(5))
            # one connection only: the snapshot falls back to the caller's (same transaction)
            report = await dbverify.verify_database(conn, log.signer.verifier, snapshot=True)
        assert report.ok, report.problem
        assert report.size == 5
    finally:
        await engine.dispose()
