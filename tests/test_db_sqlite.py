"""The broker's SQLite engine (broker.db.sqlite): reads in their own snapshot, writers in
arrival order, ``FOR UPDATE`` as the write step, another process's lock waited for off the
event loop. SQLite only (PostgreSQL has its own locks)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from broker.db import sqlite as sb_sqlite
from broker.db.engine import create_engine, create_sessionmaker

WAIT = 30.0  # generous: the machine is shared


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}")
    async with eng.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        await conn.execute(text("INSERT INTO t (id, v) VALUES (1, 'a')"))
    yield eng
    await eng.dispose()


def gate_of(tmp_path: Path) -> sb_sqlite.WriteGate:
    return sb_sqlite.gate_for(str(tmp_path / "gate.db"))


async def until(predicate: object, what: str) -> None:
    async with asyncio.timeout(WAIT):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)


def waiting(gate: sb_sqlite.WriteGate) -> int:
    return len(gate.lock._waiters or ())


async def test_writers_go_in_arrival_order_and_readers_do_not_wait(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    maker = create_sessionmaker(engine)
    gate = gate_of(tmp_path)
    done: list[str] = []
    async with maker() as first:
        await first.execute(text("UPDATE t SET v = 'first' WHERE id = 1"))
        assert gate.lock.locked()

        async def write(name: str) -> None:
            async with maker() as db:
                await db.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": name})
                await db.commit()
                done.append(name)

        second = asyncio.create_task(write("second"))
        await until(lambda: waiting(gate) == 1, "second queued")
        third = asyncio.create_task(write("third"))
        await until(lambda: waiting(gate) == 2, "third queued")
        async with maker() as reader:  # a read takes no lock: it sees the committed state
            assert await reader.scalar(text("SELECT v FROM t WHERE id = 1")) == "a"
        assert done == []
        await first.commit()
    async with asyncio.timeout(WAIT):
        await asyncio.gather(second, third)
    assert done == ["second", "third"]
    assert not gate.lock.locked()


async def test_select_for_update_is_the_write_step(engine: AsyncEngine, tmp_path: Path) -> None:
    from sqlalchemy import column, select, table

    maker = create_sessionmaker(engine)
    gate = gate_of(tmp_path)
    t = table("t", column("id"), column("v"))
    async with maker() as locker:
        assert not gate.lock.locked()
        await locker.execute(select(t.c.v).where(t.c.id == 1).with_for_update())
        assert gate.lock.locked()

        async def write() -> None:
            async with maker() as db:
                await db.execute(text("UPDATE t SET v = 'later' WHERE id = 1"))
                await db.commit()

        writer = asyncio.create_task(write())
        await until(lambda: waiting(gate) == 1, "writer queued")
        await locker.rollback()
    async with asyncio.timeout(WAIT):
        await writer
    async with maker() as db:
        assert await db.scalar(text("SELECT v FROM t WHERE id = 1")) == "later"


async def test_a_stale_snapshot_becomes_a_fresh_writer(engine: AsyncEngine) -> None:
    """A transaction that read before another committed writes without SQLITE_BUSY_SNAPSHOT
    and sees the latest row in its write step (its earlier read stays what it read)."""
    maker = create_sessionmaker(engine)
    async with maker() as slow, maker() as fast:
        assert await slow.scalar(text("SELECT v FROM t WHERE id = 1")) == "a"
        await fast.execute(text("UPDATE t SET v = 'b' WHERE id = 1"))
        await fast.commit()
        await slow.execute(text("UPDATE t SET v = v || '+c' WHERE id = 1"))
        await slow.commit()
    async with maker() as db:
        assert await db.scalar(text("SELECT v FROM t WHERE id = 1")) == "b+c"


async def test_another_process_holding_the_lock_is_waited_for_off_the_loop(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """A lock held outside this process's gate (another process, the CLI) is waited for in a
    thread with the busy timeout: the event loop keeps running meanwhile."""
    other = sqlite3.connect(tmp_path / "gate.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE t SET v = 'other' WHERE id = 1")
    maker = create_sessionmaker(engine)

    async def write() -> None:
        async with maker() as db:
            await db.execute(text("UPDATE t SET v = v || '+ours' WHERE id = 1"))
            await db.commit()

    writer = asyncio.create_task(write())
    ticks = 0
    async with asyncio.timeout(WAIT):
        while ticks < 20:  # the loop is free while our write waits for the other lock
            await asyncio.sleep(0.01)
            ticks += 1
    assert not writer.done()
    released = threading.Event()
    threading.Thread(target=lambda: (other.execute("COMMIT"), released.set())).start()
    async with asyncio.timeout(WAIT):
        await writer
    assert released.is_set()
    other.close()
    async with maker() as db:
        assert await db.scalar(text("SELECT v FROM t WHERE id = 1")) == "other+ours"


async def test_rollback_savepoint_and_close_release_the_gate(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    maker = create_sessionmaker(engine)
    gate = gate_of(tmp_path)
    db: AsyncSession
    async with maker() as db:
        async with db.begin_nested():  # SAVEPOINT is a write step
            await db.execute(text("INSERT INTO t (v) VALUES ('x')"))
        assert gate.lock.locked()
        await db.rollback()
        assert not gate.lock.locked()
        await db.execute(text("INSERT INTO t (v) VALUES ('y')"))
        assert gate.lock.locked()
    assert not gate.lock.locked()  # closed without commit: rolled back, released
    async with maker() as db:
        assert await db.scalar(text("SELECT count(*) FROM t")) == 1


async def test_autocommit_write_holds_the_gate_for_itself(tmp_path: Path) -> None:
    conn = await sb_sqlite.connect(str(tmp_path / "plain.db"))
    try:
        await conn.execute("CREATE TABLE u (id INTEGER PRIMARY KEY)")
        await conn.executemany("INSERT INTO u (id) VALUES (?)", [(1,), (2,)])
        assert not conn.gate.lock.locked()
        assert await conn.execute_fetchall("SELECT count(*) FROM u") == [(2,)]
        async with conn.execute("SELECT id FROM u ORDER BY id") as cursor:
            assert await cursor.fetchall() == [(1,), (2,)]
    finally:
        await conn.close()
        await conn.close()  # twice is harmless


async def test_the_write_queue_gives_up_after_the_busy_timeout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sb_sqlite, "BUSY_TIMEOUT_MS", 50)
    gate = sb_sqlite.gate_for(str(tmp_path / "x.db"))
    await gate.acquire()
    with pytest.raises(sqlite3.OperationalError, match="write queue timeout"):
        await gate.acquire()
    gate.release()
