"""Checkpoints on a cadence: the broker signs the log's head at most every
``checkpoint_interval_seconds`` (default 1 s) when records are not yet covered, and once
more when it stops. Appends no longer sign (one signature per transaction cost ~0.1 ms and a
row each); the promise becomes "every record is covered by a signed checkpoint within N s".

Any broker process may run this: signing takes the log's writer lock (PostgreSQL advisory
lock, SQLite's write lock), reads the stored head under it and signs only a size not yet
signed, so whoever holds the writer role at that moment signs, and replicas never sign one
size twice. An idle log costs one read per tick, no write.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit.checkpoint import SignedCheckpoint
from broker.evidence.service import audit_log_of


async def sign_if_due(maker: async_sessionmaker[AsyncSession]) -> SignedCheckpoint | None:
    """Sign the head if some record is not covered yet; None when all are."""
    async with maker() as db:
        log = audit_log_of(db)
        if not await log.uncovered(await db.connection()):
            return None
        await db.rollback()  # end the read; the write below takes the writer lock
        async with db.begin():
            return await log.sign_checkpoint(await db.connection())
