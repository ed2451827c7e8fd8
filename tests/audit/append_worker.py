"""A worker process for the crash and concurrency tests: appends events in small committed
batches and prints each batch's record ids on stdout right after its commit (= acknowledged).

Usage: python append_worker.py URL KEYDIR STREAM BATCHES BATCH_SIZE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from audit.checkpoint import CheckpointSigner
from audit.keys import LocalFileKeyProvider
from audit.store import AuditLog, NewEvent
from broker.db.engine import create_engine

LOG_ID = "audit.test/log"


async def main(url: str, keydir: Path, stream: str, batches: int, size: int) -> None:
    log = AuditLog(
        log_id=LOG_ID,
        keys=LocalFileKeyProvider(keydir / "kek.json"),
        signer=CheckpointSigner.load_or_create(keydir / "signing.pem", LOG_ID),
    )
    engine = create_engine(url)  # SQLite: WAL, synchronous=FULL, the broker's write gate
    try:
        for b in range(batches):
            events = [
                NewEvent(f"{stream}-{(b + i) % 5}", "worker.event", {"b": b, "i": i})
                for i in range(size)
            ]
            async with engine.begin() as conn:
                appended = await log.append(conn, events)
            sys.stdout.write(" ".join(a.record_id for a in appended) + "\n")
            sys.stdout.flush()
    finally:
        await engine.dispose()


if __name__ == "__main__":
    url, keydir, stream, batches, size = sys.argv[1:6]
    asyncio.run(main(url, Path(keydir), stream, int(batches), int(size)))
