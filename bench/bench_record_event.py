"""Micro-benchmark (library + broker wiring, no HTTP): ``record_event`` with 5 events per
transaction on SQLite (WAL, ``synchronous=FULL``), against the same rows inserted and
committed raw in the same run.

Ours: a broker database session (the broker's engine: inline statements, write gate),
five ``record_event`` calls, commit: the events are sealed in one append at commit
(canonical JSON, AES-256-GCM, chain, Merkle tree, stream heads and tree state; no checkpoint
signature, those come on a cadence). Baseline: ``sqlite3`` inserting five rows of the same
size into a table with the same ``audit_records`` DDL in its own file with the same PRAGMAs,
``BEGIN IMMEDIATE`` ... ``COMMIT`` per transaction. Rounds interleaved, load average printed.

    .venv/bin/python bench/bench_record_event.py [--transactions 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit.schema import records  # noqa: E402
from broker.config import Settings  # noqa: E402
from broker.db import migrate  # noqa: E402
from broker.db.engine import create_engine, create_sessionmaker  # noqa: E402
from broker.evidence.events import EventType  # noqa: E402
from broker.evidence.service import SYSTEM_ACTOR, record_event  # noqa: E402
from broker.evidence.setup import build_audit_log  # noqa: E402

EVENTS = 5
TICKETS = 50
PAYLOAD = {"session_id": "7d5c2f3e-4a1b-4c8d-9e0f-1a2b3c4d5e6f", "reason": "printer " * 8}


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


async def ours(maker: object, transactions: int, offset: int) -> float:
    start = time.perf_counter()
    for t in range(transactions):
        async with maker() as db, db.begin():  # type: ignore[operator]
            for i in range(EVENTS):
                await record_event(
                    db,
                    EventType.ticket_updated,
                    ticket=f"HD-{(offset + t) % TICKETS}",
                    actor=SYSTEM_ACTOR,
                    data={**PAYLOAD, "i": i},
                )
    return time.perf_counter() - start


def raw_setup(path: Path) -> sqlite3.Connection:
    from sqlalchemy import create_engine as sync_engine

    engine = sync_engine(f"sqlite:///{path}")
    records.metadata.create_all(engine, tables=[records])
    engine.dispose()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def raw(conn: sqlite3.Connection, transactions: int, start_position: int, size: int) -> float:
    """The same rows (sizes as ours: a ciphertext blob as long as ours), raw."""
    sql = (
        f"INSERT INTO audit_records ({', '.join(c.name for c in records.columns)}) "
        f"VALUES ({', '.join('?' * len(records.columns))})"
    )
    position = start_position
    t0 = time.perf_counter()
    for t in range(transactions):
        rows = []
        for _ in range(EVENTS):
            rows.append(
                (
                    position,
                    str(uuid.uuid4()),
                    f"HD-{t % TICKETS}",
                    position,
                    "ticket.updated",
                    1_700_000_000_000_000 + position,
                    "k" * 36,
                    size - 16,
                    os.urandom(12),
                    os.urandom(size),
                    os.urandom(32),
                    os.urandom(32),
                )
            )
            position += 1
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
    return time.perf_counter() - t0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transactions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"nproc {os.cpu_count()}, load average {loadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'broker.db'}"
        await asyncio.to_thread(migrate.upgrade, url)
        settings = Settings(
            environment="test",
            database_url=url,
            data_dir=Path(tmp) / "data",
            secret_key=SecretStr("bench-secret-key-" + "x" * 16),
        )
        engine = create_engine(url)
        maker = create_sessionmaker(
            engine, info={"audit_log": build_audit_log(settings), "settings": settings}
        )
        await ours(maker, 50, 0)  # warm-up: keys of every ticket, caches
        async with engine.connect() as conn:
            size = len(
                await conn.scalar(records.select().with_only_columns(records.c.ciphertext).limit(1))
            )
        rawdb = raw_setup(Path(tmp) / "raw.db")
        raw(rawdb, 50, 0, size)
        n = args.transactions
        ratios = []
        for r in range(args.rounds):
            print(f"round {r + 1}: load average {loadavg()}", flush=True)
            a = await ours(maker, n, (r + 1) * n)
            b = raw(rawdb, n, (r + 1) * n * EVENTS, size)
            ratios.append(b / a)
            print(
                f"  record_event x{EVENTS} + commit: {n / a:8.1f} txn/s ({n * EVENTS / a:8.1f} "
                f"events/s)   raw insert+commit: {n / b:8.1f} txn/s   ratio {b / a:.3f}",
                flush=True,
            )
        print(
            f"\nrecord_event, {EVENTS} events per transaction, SQLite FULL: best ratio "
            f"{max(ratios):.3f}, rounds {', '.join(f'{x:.3f}' for x in ratios)} "
            f"(target >= 0.5); load average {loadavg()}"
        )
        rawdb.close()
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
