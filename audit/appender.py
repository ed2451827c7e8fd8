"""One append transaction: take the single-writer lock, read the state, seal, write.

Runs inside the caller's transaction, so the events commit (and are acknowledged) with the
change they describe. Exactly one writer assigns log positions: PostgreSQL takes a
transaction-scoped advisory lock; on SQLite the first statement is a write, so the
transaction holds SQLite's single write lock from there on. Records, stream heads, tree state,
the completed stored subtrees and (unless the caller signs on a cadence instead, see
:func:`sign_checkpoint`) the batch's signed checkpoint commit together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit import schema
from audit.checkpoint import CheckpointSigner, SignedCheckpoint
from audit.driver import ADVISORY_LOCK_KEY, ops_for
from audit.errors import AuditError
from audit.keyring import Keyring
from audit.merkle import Frontier, Node
from audit.records import FieldCodec, to_micros
from audit.schema import node_key
from audit.sealing import NewEvent, Prepared, StreamHead, prepare, seal_rows

__all__ = [
    "ADVISORY_LOCK_KEY",
    "Appended",
    "LastAppend",
    "append_batch",
    "sign_checkpoint",
    "take_lock",
]


class Appended(NamedTuple):
    """Where an event was sealed (a tuple: an append returns one per event)."""

    position: int
    record_id: str
    stream: str
    stream_seq: int
    leaf_hash: bytes


@dataclass
class LastAppend:
    """The stream heads and data keys this process's last append left behind.

    Reused by the next append only if the stored tree is exactly the one that append
    produced (same size and frontier, read under the lock): then nobody else has appended
    since and that append committed, so the heads and live keys are still those in the
    database (an erasure always appends, and erasing from this process forgets them first).
    A rolled-back transaction or another writer leaves a different tree, and everything is
    read again. Saves two queries per append; bounded to ``MAX_STREAMS`` streams.
    """

    MAX_STREAMS = 10_000

    size: int = -1
    frontier: bytes = b""
    heads: dict[str, StreamHead] = field(default_factory=dict)
    keys: dict[str, tuple[str, AESGCM]] = field(default_factory=dict)

    def check(self, size: int, frontier: bytes) -> None:
        """Forget all unless this is the tree the last append left; invalid until ``keep``."""
        valid = self.size == size and self.frontier == frontier
        self.size = -1  # an append that fails half-way must not leave advanced heads valid
        if not valid:
            self.forget()

    def keep(self, size: int, frontier: bytes) -> None:
        if len(self.heads) > self.MAX_STREAMS:
            self.forget()
            return
        self.size, self.frontier = size, frontier

    def forget(self) -> None:
        self.size = -1
        self.heads.clear()
        self.keys.clear()


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
    events: Sequence[NewEvent] | Prepared,
    *,
    codec: FieldCodec,
    keyring: Keyring,
    signer: CheckpointSigner,
    portable: bool = False,
    last: LastAppend | None = None,
    sign: bool = True,
) -> list[Appended]:
    """Seal ``events`` in the caller's transaction; signs one checkpoint for the batch unless
    ``sign`` is false (the caller then signs on a cadence with :func:`sign_checkpoint`).

    ``portable`` writes through SQLAlchemy Core even where a driver path exists (tests);
    ``last`` is the caller's :class:`LastAppend`, reused when still valid.
    """
    if not events:
        return []
    # Before any write: a bad batch leaves no key or lock behind, and the state-free part
    # of sealing (canonical JSON, ids, nonces) stays outside the lock.
    ready = events if isinstance(events, Prepared) else prepare(events)
    ops = await ops_for(conn, portable=portable)
    if not await ops.lock():  # the driver could not: the transaction is not begun yet
        await take_lock(conn)
    now_us = to_micros(datetime.now(UTC))
    tree = await ops.tree()
    frontier = Frontier() if tree is None else Frontier.unpack(*tree)
    cache = last if last is not None else LastAppend()
    cache.check(frontier.size, frontier.pack())
    streams = {e.stream for e in ready.events}
    ciphers = cache.keys
    if missing := streams - ciphers.keys():
        ciphers.update(await keyring.for_streams(ops, missing, now_us))
    heads = cache.heads
    known = {s for s in streams if s in heads}
    if missing := streams - known:
        for s, q, h, p in await ops.heads(missing):
            heads[s] = StreamHead(q, h, p)
            known.add(s)
    completed: list[Node] = []
    rows = seal_rows(codec, ready, frontier, heads, ciphers.__getitem__, completed=completed)
    await ops.insert_records(rows)
    if completed:
        await ops.insert_nodes([(node_key(lv, ix), h) for lv, ix, h in completed])
    touched = [(s, h.last_seq, h.last_hash, h.last_position) for s in streams for h in [heads[s]]]
    await ops.save_heads(
        [t for t in touched if t[0] not in known], [t for t in touched if t[0] in known]
    )
    root = frontier.root()
    packed = frontier.pack()
    await ops.save_tree(tree is None, frontier.size, packed, root)
    if sign:
        signed = signer.sign(frontier.size, root)
        await ops.checkpoint(signed.size, root, signed.note, now_us)
    cache.keep(frontier.size, packed)
    return [Appended(r[0], r[1], r[2], r[3], r[11]) for r in rows]


async def sign_checkpoint(
    conn: AsyncConnection, signer: CheckpointSigner, *, portable: bool = False
) -> SignedCheckpoint | None:
    """Sign the stored tree head if records exist past the latest checkpoint, in the caller's
    transaction and under the single-writer lock (so whoever holds the writer role signs, and
    two signers never sign one size twice). Returns the new checkpoint, or None when the
    latest one already covers every record."""
    ops = await ops_for(conn, portable=portable)
    if not await ops.lock():
        await take_lock(conn)
    state = await ops.tree_root()
    if state is None or state[0] <= await ops.checkpoint_size():
        return None
    # Never sign a head the records no longer reach: a tail cut (with its checkpoints) must
    # stay visible as a rollback, not be covered again by a fresh signature.
    rc = schema.records.c
    last = (await conn.execute(select(func.max(rc.position)))).scalar()
    if last is None or int(last) != state[0] - 1:
        raise AuditError(
            f"not signing: the stored tree has {state[0]} records but the last record is at "
            f"position {last}; verify the log (records were removed or added outside it)"
        )
    signed = signer.sign(*state)
    await ops.checkpoint(signed.size, signed.root, signed.note, to_micros(datetime.now(UTC)))
    return signed
