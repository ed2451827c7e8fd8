"""Durable appends/s through ``AuditLog.append`` vs raw SQLite batched inserts.

SQLite mode: a database file in WAL mode with ``synchronous=FULL``, ``BEGIN IMMEDIATE``, one
transaction (and one signed checkpoint) per batch. Baseline, same run, same settings: the
``sqlite3`` module's ``executemany`` of rows of the same size into the same table (the
``audit_records`` DDL with all its indexes, in its own file) with the same kind of record ids
(time-ordered UUIDv7, as the store uses), one commit per batch; rows are built in the timed
loop from pre-made random bytes. ``--postgres``: two processes append at once to one PostgreSQL
database (advisory lock), total events/s over the wall time. Prints figures and ratios: per
round (audit, then raw, fresh files; wall clock and, less sensitive to other load, CPU time
of the process including the aiosqlite thread) and of the best rounds.

    .venv/bin/python bench/bench_audit_append.py [--events 100000] [--batch 1000] [--rounds 3]
    .venv/bin/python bench/bench_audit_append.py --postgres [--events 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import secrets
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from audit import schema
from audit.checkpoint import CheckpointSigner
from audit.keys import LocalFileKeyProvider
from audit.sealing import new_record_ids
from audit.store import AuditLog, NewEvent

LOG_ID = "bench.example/log"
PAYLOAD = {"actor": "tech-17", "ip": "198.51.100.7", "reason": "printer queue", "n": 0}


def sqlite_engine(path: Path) -> AsyncEngine:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{path}", connect_args={"isolation_level": None}
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi: Any, _: Any) -> None:
        cur = dbapi.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_log(keydir: Path) -> AuditLog:
    return AuditLog(
        log_id=LOG_ID,
        keys=LocalFileKeyProvider(keydir / "kek.json"),
        signer=CheckpointSigner.load_or_create(keydir / "signing.pem", LOG_ID),
    )


def batch_events(b: int, size: int, tag: str = "") -> list[NewEvent]:
    return [
        NewEvent(f"HD-{tag}{(b * size + i) % 200}", "session.event", {**PAYLOAD, "n": i})
        for i in range(size)
    ]


async def audit_sqlite(workdir: Path, events: int, batch: int) -> tuple[float, float, int]:
    db = workdir / "audit.db"
    engine = sqlite_engine(db)
    async with engine.begin() as conn:
        await conn.run_sync(schema.metadata.create_all)
    log = make_log(workdir)
    batches = [batch_events(b, batch) for b in range(events // batch)]
    start, cpu = time.perf_counter(), time.process_time()
    for evs in batches:
        async with engine.begin() as conn:
            await log.append(conn, evs)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    async with engine.connect() as conn:
        row = (await conn.execute(schema.records.select().limit(1))).first()
    await engine.dispose()
    assert row is not None
    return elapsed, cpu, sum(len(v) if isinstance(v, (bytes, str)) else 8 for v in row)


def raw_sqlite(workdir: Path, events: int, batch: int, row_bytes: int) -> tuple[float, float]:
    conn = sqlite3.connect(workdir / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    sync = sqlalchemy.create_engine(f"sqlite:///{workdir / 'raw.db'}")
    schema.records.create(sync)  # the same DDL and indexes as the audit log's table
    sync.dispose()
    fixed = 36 + 6 + 13 + 32 + 12 + 32 + 32 + 6 * 8
    blob = secrets.token_bytes(max(row_bytes - fixed, 16))
    start, cpu = time.perf_counter(), time.process_time()
    for b in range(events // batch):
        ids = new_record_ids(batch, time.time_ns() // 1_000_000)
        nonces = os.urandom(12 * batch)
        rows = [
            (
                b * batch + i,
                ids[i],
                f"HD-{i % 200}",
                b * batch + i,
                "session.event",
                0,
                "k" * 32,
                len(blob),
                nonces[12 * i : 12 * i + 12],
                blob,
                b"\0" * 32,
                b"\1" * 32,
            )
            for i in range(batch)
        ]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO audit_records VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        conn.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    conn.close()
    return elapsed, cpu


def _pg_worker(url: str, keydir: str, tag: str, events: int, batch: int, q: Any) -> None:
    async def run() -> float:
        engine = create_async_engine(url)
        log = make_log(Path(keydir))
        batches = [batch_events(b, batch, tag) for b in range(events // batch)]
        start = time.perf_counter()
        for evs in batches:
            async with engine.begin() as conn:
                await log.append(conn, evs)
        elapsed = time.perf_counter() - start
        await engine.dispose()
        return elapsed

    q.put(asyncio.run(run()))


async def pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database="test")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def postgres(workdir: Path, events: int, batch: int) -> None:
    name = f"sb_bench_{secrets.token_hex(4)}"
    asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    try:

        async def setup() -> None:
            engine = create_async_engine(url)
            async with engine.begin() as conn:
                await conn.run_sync(schema.metadata.create_all)
            await engine.dispose()

        asyncio.run(setup())
        make_log(workdir)  # create the key files once
        q: Any = multiprocessing.Queue()
        procs = [
            multiprocessing.Process(
                target=_pg_worker, args=(url, str(workdir), tag, events // 2, batch, q)
            )
            for tag in ("a", "b")
        ]
        start = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        wall = time.perf_counter() - start
        per = [q.get() for _ in procs]
        total = (events // 2 // batch) * batch * 2
        print(f"PostgreSQL, 2 processes, {total} events, batches of {batch}")
        print(
            f"  wall {wall:.2f} s (process start included), workers {per[0]:.2f} s / {per[1]:.2f} s"
        )
        print(f"  {total / max(per):,.0f} events/s (slowest worker)   target >= 20,000")
    finally:
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    if args.postgres:
        with tempfile.TemporaryDirectory() as tmp:
            postgres(Path(tmp), args.events, args.batch)
        return
    n = args.events // args.batch * args.batch
    rounds: list[tuple[float, float, float, float]] = []
    for _ in range(args.rounds):  # interleaved: the machine's load hits both sides alike
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            ours, ours_cpu, row_bytes = asyncio.run(audit_sqlite(workdir, args.events, args.batch))
            raw, raw_cpu = raw_sqlite(workdir, args.events, args.batch, row_bytes)
        rounds.append((ours, raw, ours_cpu, raw_cpu))
    print(f"SQLite WAL synchronous=FULL, {n} events, batches of {args.batch}, ~{row_bytes} B rows")
    for i, (ours, raw, ours_cpu, raw_cpu) in enumerate(rounds, 1):
        print(
            f"  round {i}: AuditLog.append {n / ours:>8,.0f} events/s, raw executemany "
            f"{n / raw:>8,.0f} rows/s, ratio {raw / ours:.2f}x "
            f"(CPU: {n / ours_cpu:,.0f} vs {n / raw_cpu:,.0f}/s, {raw_cpu / ours_cpu:.2f}x)"
        )
    ours, raw = min(r[0] for r in rounds), min(r[1] for r in rounds)
    print(f"  best AuditLog.append   {n / ours:>10,.0f} events/s   target >= 50,000")
    print(f"  best raw executemany   {n / raw:>10,.0f} rows/s")
    print(f"  ratio of the bests     {raw / ours:>10.2f}x         target >= 0.5x")


if __name__ == "__main__":
    main()
