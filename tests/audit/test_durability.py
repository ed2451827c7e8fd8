"""Crash safety (SIGKILL mid-append on SQLite, repeated) and concurrent appends on PostgreSQL.

Worker processes run tests/audit/append_worker.py with the project's interpreter; a batch's
record ids are printed only after its commit, so every printed id is an acknowledged event.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from audit import schema
from audit.checkpoint import CheckpointSigner
from audit.keys import LocalFileKeyProvider
from audit.store import verify_database
from broker.db.engine import create_engine

from .conftest import LOG_ID

WORKER = Path(__file__).with_name("append_worker.py")
REPO = Path(__file__).resolve().parents[2]
RUNS = 20


def spawn(url: str, keydir: Path, stream: str, batches: int, size: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, str(keydir), stream, str(batches), str(size)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


async def check(url: str, keydir: Path) -> tuple[list[str], list[int]]:
    verifier = CheckpointSigner.load_or_create(keydir / "signing.pem", LOG_ID).verifier
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            report = await verify_database(conn, verifier)
            assert report.ok, report.verdict()
            rows = (
                await conn.execute(
                    select(schema.records.c.record_id, schema.records.c.position).order_by(
                        schema.records.c.position
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    return [r[0] for r in rows], [int(r[1]) for r in rows]


def keys_in(tmp: Path) -> Path:
    keydir = tmp / "keys"
    LocalFileKeyProvider(keydir / "kek.json")
    CheckpointSigner.load_or_create(keydir / "signing.pem", LOG_ID)
    return keydir


@pytest.mark.slow
async def test_sigkill_never_loses_acknowledged_events(
    sqlite_template: Path, tmp_path: Path
) -> None:
    keydir = keys_in(tmp_path)
    db = tmp_path / "crash.db"
    shutil.copy(sqlite_template, db)
    url = f"sqlite+aiosqlite:///{db}"
    rng = random.Random(4711)
    acknowledged: list[str] = []
    for run in range(RUNS):
        worker = spawn(url, keydir, f"R{run}", batches=400, size=25)  # 10,000 events at most
        assert worker.stdout is not None
        wanted = rng.randint(3, 40)
        for _ in range(wanted):
            line = await asyncio.to_thread(worker.stdout.readline)
            assert line, worker.stderr.read() if worker.stderr else ""
            acknowledged.extend(line.split())
        worker.send_signal(signal.SIGKILL)  # mid-way: the next batches are being written
        worker.wait()
        present, positions = await check(url, keydir)
        assert set(acknowledged) <= set(present)
        assert positions == list(range(len(positions)))
    assert len(acknowledged) >= RUNS * 3 * 25


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_two_processes_append_concurrently_on_postgresql(db_url: str, tmp_path: Path) -> None:
    keydir = keys_in(tmp_path)
    workers = [spawn(db_url, keydir, name, batches=60, size=20) for name in ("A", "B")]
    outputs = [await asyncio.to_thread(w.communicate, timeout=120) for w in workers]
    for w, (_, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err
    printed = [i for out, _ in outputs for i in out.split()]
    present, positions = await check(db_url, keydir)
    assert len(printed) == 2 * 60 * 20 == len(present)
    assert sorted(printed) == sorted(present)
    assert positions == list(range(2400))  # one linear tree: no gaps, no forks
