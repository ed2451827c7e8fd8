"""One append transaction: take the single-writer lock, read the state, seal, write.

Runs inside the caller's transaction, so the events commit (and are acknowledged) with the
change they describe. Exactly one writer assigns log positions: PostgreSQL takes a
transaction-scoped advisory lock; on SQLite the first statement is a write, so the
transaction holds SQLite's single write lock from there on. Records, stream heads, tree state
and the batch's signed checkpoint commit together.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit import schema
from audit.checkpoint import CheckpointSigner
from audit.driver import ops_for
from audit.keyring import Keyring
from audit.merkle import Frontier
from audit.records import FieldCodec, to_micros
from audit.sealing import NewEvent, StreamHead, check_events, seal_rows

ADVISORY_LOCK_KEY = 0x5342_4155_4449_5431  # "SBAUDIT1": one writer across broker processes


class Appended(NamedTuple):
    """Where an event was sealed (a tuple: an append returns one per event)."""

    position: int
    record_id: str
    stream: str
    stream_seq: int
    leaf_hash: bytes


async def take_lock(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
    else:
        # A write first: SQLite hands the write lock to this transaction now, before we
        # read the state we are about to extend.
        ts = schema.tree_state
        await conn.execute(update(ts).where(ts.c.id == 1).values(size=ts.c.size))


async def append_batch(
    conn: AsyncConnection,
    events: Sequence[NewEvent],
    *,
    codec: FieldCodec,
    keyring: Keyring,
    signer: CheckpointSigner,
    portable: bool = False,
) -> list[Appended]:
    """Seal ``events`` in the caller's transaction; signs one checkpoint for the batch.

    ``portable`` writes through SQLAlchemy Core even where a driver path exists (tests).
    """
    if not events:
        return []
    check_events(events)  # before any write: a bad batch leaves no key or lock behind
    await take_lock(conn)
    now = datetime.now(UTC)
    now_us = to_micros(now)
    ops = await ops_for(conn, portable=portable)
    tree = await ops.tree()
    frontier = Frontier() if tree is None else Frontier.unpack(*tree)
    streams = {e.stream for e in events}
    ciphers = await keyring.for_streams(ops, streams, now_us)
    heads = {s: StreamHead(q, h, p) for s, q, h, p in await ops.heads(streams)}
    known = set(heads)
    rows = seal_rows(codec, events, frontier, heads, ciphers.__getitem__, now)
    await ops.insert_records(rows)
    touched = [(s, h.last_seq, h.last_hash, h.last_position) for s, h in heads.items()]
    await ops.save_heads(
        [t for t in touched if t[0] not in known], [t for t in touched if t[0] in known]
    )
    root = frontier.root()
    await ops.save_tree(tree is None, frontier.size, frontier.pack(), root)
    signed = signer.sign(frontier.size, root)
    await ops.checkpoint(signed.size, root, signed.note, now_us)
    return [Appended(r[0], r[1], r[2], r[3], r[11]) for r in rows]
