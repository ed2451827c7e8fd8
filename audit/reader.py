"""Reading the log back: sealed records, decrypted streams, tree state, checkpoints, leaves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from audit import schema
from audit.canonical import parse
from audit.checkpoint import SignedCheckpoint, parse_checkpoint
from audit.errors import VerificationError
from audit.keyring import Keyring
from audit.merkle import Frontier
from audit.records import Record, to_micros
from audit.sealing import open_record
from audit.verify import row_to_record

RECORD_COLUMNS = tuple(schema.records.columns)  # in ``Record`` field order


@dataclass(frozen=True)
class ReadRecord:
    position: int
    record_id: str
    stream: str
    stream_seq: int
    event_type: str
    occurred_at: datetime
    payload: dict[str, Any] | None  # None when the ticket's data key was destroyed
    erased: bool


async def read_frontier(conn: AsyncConnection) -> Frontier | None:
    ts = schema.tree_state
    row = (await conn.execute(select(ts.c.size, ts.c.frontier).where(ts.c.id == 1))).first()
    return None if row is None else Frontier.unpack(int(row[0]), bytes(row[1]))


async def read_records(
    conn: AsyncConnection,
    *,
    stream: str | None = None,
    after: int = -1,
    limit: int | None = None,
) -> list[Record]:
    """Sealed records in log order (optionally one stream's), as stored."""
    stmt = select(*RECORD_COLUMNS).where(schema.records.c.position > after)
    if stream is not None:
        stmt = stmt.where(schema.records.c.stream == stream)
    stmt = stmt.order_by(schema.records.c.position)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [row_to_record(row) for row in await conn.execute(stmt)]


async def read_stream(
    conn: AsyncConnection, log_id: str, keyring: Keyring, stream: str
) -> list[ReadRecord]:
    """A stream's records with decrypted payloads (``None`` where the key was destroyed)."""
    return await _opened(conn, log_id, keyring, await read_records(conn, stream=stream))


@dataclass(frozen=True)
class StreamQuery:
    """A page of one stream's records, newest first, by event type and time (inclusive
    ``since``, exclusive ``until``)."""

    stream: str
    event_types: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    offset: int = 0


async def search_stream(
    conn: AsyncConnection, log_id: str, keyring: Keyring, query: StreamQuery
) -> tuple[list[ReadRecord], bool]:
    """The page of records ``query`` asks for, decrypted, and whether more follow. It walks
    the stream's (stream, seq) index newest first; no count over the whole stream."""
    c = schema.records.c
    stmt = select(*RECORD_COLUMNS).where(c.stream == query.stream)
    if query.event_types:
        stmt = stmt.where(c.event_type.in_(query.event_types))
    if query.since is not None:
        stmt = stmt.where(c.occurred_at_us >= to_micros(query.since))
    if query.until is not None:
        stmt = stmt.where(c.occurred_at_us < to_micros(query.until))
    stmt = stmt.order_by(c.stream_seq.desc()).limit(query.limit + 1).offset(query.offset)
    found = [row_to_record(row) for row in await conn.execute(stmt)]
    opened = await _opened(conn, log_id, keyring, found[: query.limit])
    return opened, len(found) > query.limit


async def _opened(
    conn: AsyncConnection, log_id: str, keyring: Keyring, records: list[Record]
) -> list[ReadRecord]:
    ciphers = await keyring.live(conn, {r.key_id for r in records})
    out = []
    for r in records:
        cipher = ciphers.get(r.key_id)
        payload = None
        if cipher is not None:
            try:
                payload = parse(open_record(log_id, r, cipher))
            except InvalidTag as exc:
                raise VerificationError(
                    f"record {r.record_id} does not decrypt: it was altered or moved",
                    position=r.position,
                    record_id=r.record_id,
                ) from exc
        out.append(
            ReadRecord(
                r.position,
                r.record_id,
                r.stream,
                r.stream_seq,
                r.event_type,
                r.occurred_at,
                payload,
                cipher is None,
            )
        )
    return out


async def latest_checkpoint(conn: AsyncConnection) -> SignedCheckpoint | None:
    cp = schema.checkpoints
    row = (await conn.execute(select(cp.c.note).order_by(cp.c.size.desc()).limit(1))).first()
    if row is None:
        return None
    note = str(row[0])
    return SignedCheckpoint(parse_checkpoint(note.partition("\n\n")[0] + "\n"), note)


async def leaf_hashes(conn: AsyncConnection, size: int) -> list[bytes]:
    rows = await conn.execute(
        select(schema.records.c.leaf_hash)
        .where(schema.records.c.position < size)
        .order_by(schema.records.c.position)
    )
    return [bytes(r[0]) for r in rows]
