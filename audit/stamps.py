"""Where RFC 3161 tokens are kept: ``audit_timestamps``, one row per timestamped checkpoint.

Separate from audit.timestamp so that the offline verifier needs no database library.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from audit import schema
from audit.checkpoint import SignedCheckpoint, parse_checkpoint
from audit.records import to_micros
from audit.timestamp import Timestamp


@dataclass(frozen=True)
class StoredTimestamp:
    checkpoint: SignedCheckpoint
    response: bytes  # the DER TimeStampResp


def _signed(note: str) -> SignedCheckpoint:
    return SignedCheckpoint(parse_checkpoint(note.partition("\n\n")[0] + "\n"), note)


async def untimestamped_checkpoint(conn: AsyncConnection) -> SignedCheckpoint | None:
    """The latest signed checkpoint if it has no timestamp yet (None: none, or it has one)."""
    cp, ts = schema.checkpoints, schema.timestamps
    row = (
        await conn.execute(select(cp.c.size, cp.c.note).order_by(cp.c.size.desc()).limit(1))
    ).first()
    if row is None:
        return None
    done = (await conn.execute(select(ts.c.size).where(ts.c.size == row[0]))).first()
    if done is not None:
        return None
    return _signed(str(row[1]))


async def store_timestamp(
    conn: AsyncConnection, size: int, response: bytes, stamp: Timestamp, now: datetime
) -> None:
    """Keep a verified token beside the checkpoint of ``size`` (in the caller's transaction)."""
    await conn.execute(
        insert(schema.timestamps).values(
            size=size,
            response=response,
            gen_time_us=to_micros(stamp.gen_time),
            created_at_us=to_micros(now),
        )
    )


async def latest_timestamp(conn: AsyncConnection, at_most: int) -> StoredTimestamp | None:
    """The timestamp of the largest checkpoint of at most ``at_most`` records, if any."""
    cp, ts = schema.checkpoints, schema.timestamps
    row = (
        await conn.execute(
            select(cp.c.note, ts.c.response)
            .join(ts, ts.c.size == cp.c.size)
            .where(cp.c.size <= at_most)
            .order_by(cp.c.size.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    return StoredTimestamp(_signed(str(row[0])), bytes(row[1]))
