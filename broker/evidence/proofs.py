"""Proofs for the auditor's views (the ticket timeline, a proofs API): a record's inclusion
in the latest signed checkpoint and the consistency of two tree sizes, each from the stored
subtrees in O(log n) reads (``audit.proofs``), never a pass over the log; any signed
checkpoint by its size, and the consistency of two of them, for an outside monitor that
checks the log never forked or shrank (each answer is checked against the signatures).

A record after the latest checkpoint gets no proof yet: it is reported as not yet covered
(checkpoints come on a cadence, ``broker.evidence.checkpoints``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from audit import schema
from audit.checkpoint import SignedCheckpoint, parse_checkpoint
from broker.errors import NotFound, ValidationFailed
from broker.evidence.service import audit_log_of


@dataclass(frozen=True)
class RecordProof:
    position: int
    record_id: str
    leaf_hash: bytes
    checkpoint: SignedCheckpoint | None  # None: no signed checkpoint covers the record yet
    path: list[bytes]

    @property
    def covered(self) -> bool:
        return self.checkpoint is not None


async def record_proof(db: AsyncSession, position: int) -> RecordProof:
    """The inclusion proof of the record at ``position`` in the latest signed checkpoint."""
    rc = schema.records.c
    conn = await db.connection()
    row = (
        await conn.execute(select(rc.record_id, rc.leaf_hash).where(rc.position == position))
    ).first()
    if row is None:
        raise NotFound(f"the audit log has no record at position {position}")
    log = audit_log_of(db)
    latest = await log.latest_checkpoint(conn)
    if latest is None or position >= latest.size:
        return RecordProof(position, str(row[0]), bytes(row[1]), None, [])
    path = await log.inclusion_proof(conn, position, latest.size)
    return RecordProof(position, str(row[0]), bytes(row[1]), latest, path)


async def consistency(db: AsyncSession, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, new_size) between two sizes of the log (both at most its size)."""
    log = audit_log_of(db)
    conn = await db.connection()
    size = await log.size(conn)
    if not 0 < old_size <= new_size <= size:
        raise ValidationFailed(
            f"sizes must satisfy 0 < old ({old_size}) <= new ({new_size}) <= {size}"
        )
    return await log.consistency_proof(conn, old_size, new_size)


@dataclass(frozen=True)
class StoredCheckpoint:
    signed: SignedCheckpoint
    signed_at: datetime


async def checkpoint_at(db: AsyncSession, size: int) -> StoredCheckpoint:
    """The checkpoint signed at tree size ``size`` (the one an ``evidence.sealed`` digest names)."""
    cp = schema.checkpoints.c
    conn = await db.connection()
    row = (await conn.execute(select(cp.note, cp.created_at_us).where(cp.size == size))).first()
    if row is None:
        raise NotFound(f"no checkpoint was signed at tree size {size}")
    note = str(row[0])
    checkpoint = parse_checkpoint(note.partition("\n\n")[0] + "\n")
    return StoredCheckpoint(
        SignedCheckpoint(checkpoint, note), datetime.fromtimestamp(int(row[1]) / 1e6, UTC)
    )


@dataclass(frozen=True)
class CheckpointConsistency:
    old: SignedCheckpoint
    new: SignedCheckpoint
    path: list[bytes]


async def checkpoint_consistency(
    db: AsyncSession, old_size: int, new_size: int
) -> CheckpointConsistency:
    """PROOF(old, new) between two signed checkpoints: the older tree is a prefix of the newer."""
    if old_size > new_size:
        raise ValidationFailed(f"old ({old_size}) must not be larger than new ({new_size})")
    old = await checkpoint_at(db, old_size)
    new = await checkpoint_at(db, new_size)
    path = await consistency(db, old_size, new_size)
    return CheckpointConsistency(old.signed, new.signed, path)
