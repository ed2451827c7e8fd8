"""The audit log on a SQL database (SQLite or PostgreSQL) through SQLAlchemy's async Core.

:class:`AuditLog` is the library's front door; each job lives in its own module:
``appender`` (one append transaction under the single-writer lock), ``driver`` (its
statements, per database driver), ``keyring`` (data keys), ``reader`` (reading back), ``dbverify``
(verifying a database). :meth:`AuditLog.append` runs inside the caller's transaction: the
broker writes an event in the same transaction as the change it describes, and the event is
acknowledged when that transaction commits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from audit import proofs, reader, schema
from audit.appender import (
    ADVISORY_LOCK_KEY,
    Appended,
    LastAppend,
    append_batch,
    sign_checkpoint,
    take_lock,
)
from audit.bundle import ERASED_EVENT
from audit.checkpoint import CheckpointSigner, SignedCheckpoint
from audit.dbverify import verify_database
from audit.errors import AuditError, RollbackDetected
from audit.keyring import CIPHER_CACHE_SIZE, Keyring
from audit.keys import KeyProvider
from audit.publish import CheckpointPublisher
from audit.reader import ReadRecord
from audit.records import FieldCodec, Record, to_micros
from audit.sealing import NewEvent, Prepared, prepare
from audit.verify import VerifyReport, row_to_record

__all__ = [
    "ADVISORY_LOCK_KEY",
    "CIPHER_CACHE_SIZE",
    "ERASED_EVENT",
    "SYSTEM_STREAM",
    "Appended",
    "AuditLog",
    "Erasure",
    "NewEvent",
    "Prepared",
    "ReadRecord",
    "row_to_record",
    "verify_database",
]

# The log's own stream (events of no ticket): never erased, so erasure records live there too.
SYSTEM_STREAM = "_system"


@dataclass(frozen=True)
class Erasure:
    """The two ``ticket.erased`` records of one erasure: ``marker`` in the erased ticket's
    chain, ``record`` in the log's own stream (the one a later erasure cannot shred)."""

    marker: Appended
    record: Appended


class AuditLog:
    """One log (``log_id``), its key-encryption keys and its checkpoint signer."""

    def __init__(
        self,
        *,
        log_id: str,
        keys: KeyProvider,
        signer: CheckpointSigner,
        publisher: CheckpointPublisher | None = None,
    ) -> None:
        if log_id != signer.origin:
            # Verifiers know the log only by its public key, whose name is the origin.
            raise AuditError(f"log id {log_id!r} must be the signer's origin {signer.origin!r}")
        self.log_id = log_id
        self.signer = signer
        self.publisher = publisher
        self.keyring = Keyring(keys)
        self._codec = FieldCodec(log_id)
        self._last = LastAppend()

    @property
    def keys(self) -> KeyProvider:
        return self.keyring.provider

    # -- writing -----------------------------------------------------------------------

    async def append(
        self, conn: AsyncConnection, events: Sequence[NewEvent] | Prepared, *, sign: bool = True
    ) -> list[Appended]:
        """Seal ``events`` in the caller's transaction; signs one checkpoint for the batch
        unless ``sign`` is false (then :meth:`sign_checkpoint` covers them on a cadence).

        ``events`` may come from :meth:`prepare` (checked and encoded ahead of the lock)."""
        return await append_batch(
            conn,
            events,
            codec=self._codec,
            keyring=self.keyring,
            signer=self.signer,
            last=self._last,
            sign=sign,
        )

    async def uncovered(self, conn: AsyncConnection) -> int:
        """How many records the latest signed checkpoint does not cover (a read, no lock)."""
        frontier = await reader.read_frontier(conn)
        latest = await reader.latest_checkpoint(conn)
        size = 0 if frontier is None else frontier.size
        return size - (0 if latest is None else latest.size)

    async def sign_checkpoint(self, conn: AsyncConnection) -> SignedCheckpoint | None:
        """Sign the current tree head if any record is not yet covered (in the caller's
        transaction, under the writer lock); None if the latest checkpoint covers all."""
        return await sign_checkpoint(conn, self.signer)

    @staticmethod
    def prepare(events: Sequence[NewEvent]) -> Prepared:
        """Check and encode ``events`` now; raises for a bad one (see :func:`prepare`)."""
        return prepare(events)

    # -- reading -----------------------------------------------------------------------

    async def records(
        self,
        conn: AsyncConnection,
        *,
        stream: str | None = None,
        after: int = -1,
        limit: int | None = None,
    ) -> list[Record]:
        """Sealed records in log order (optionally one stream's), as stored."""
        return await reader.read_records(conn, stream=stream, after=after, limit=limit)

    async def read_stream(self, conn: AsyncConnection, stream: str) -> list[ReadRecord]:
        """A stream's records with decrypted payloads (``None`` where the key was destroyed)."""
        return await reader.read_stream(conn, self.log_id, self.keyring, stream)

    async def search_stream(
        self, conn: AsyncConnection, query: reader.StreamQuery
    ) -> tuple[list[ReadRecord], bool]:
        """A page of one stream's decrypted records, newest first, and whether more follow."""
        return await reader.search_stream(conn, self.log_id, self.keyring, query)

    async def latest_checkpoint(self, conn: AsyncConnection) -> SignedCheckpoint | None:
        return await reader.latest_checkpoint(conn)

    async def size(self, conn: AsyncConnection) -> int:
        frontier = await reader.read_frontier(conn)
        return 0 if frontier is None else frontier.size

    async def leaf_hashes(self, conn: AsyncConnection, size: int) -> list[bytes]:
        return await reader.leaf_hashes(conn, size)

    async def inclusion_proof(self, conn: AsyncConnection, position: int, size: int) -> list[bytes]:
        """PATH(position, D[size]) from the stored subtrees: O(log n) hashes read."""
        return await proofs.inclusion_proof(conn, position, size)

    async def consistency_proof(
        self, conn: AsyncConnection, old_size: int, new_size: int
    ) -> list[bytes]:
        """PROOF(old_size, D[new_size]) from the stored subtrees: O(log n) hashes read."""
        return await proofs.consistency_proof(conn, old_size, new_size)

    # -- keys and erasure --------------------------------------------------------------

    async def erase_stream(
        self,
        conn: AsyncConnection,
        stream: str,
        *,
        actor: Mapping[str, Any],
        record_in: str = SYSTEM_STREAM,
        details: Mapping[str, Any] | None = None,
    ) -> Erasure:
        """Crypto-shred a ticket: destroy its data keys, then seal a ``ticket.erased`` record
        twice: in the ticket's own chain (under a new key of the ticket, so its timeline and
        bundle show the erasure) and in ``record_in`` (the log's own stream, never erased),
        where a later erasure of the ticket cannot shred who erased it, why and when.

        Refused (:class:`AuditError`) when nothing was sealed for the ticket since its last
        erasure (the ticket's latest record is a ``ticket.erased``), or when it has no live key:
        a second erasure would only destroy the first one's record in the ticket's chain.
        """
        if record_in == stream:
            raise AuditError(f"the erasure of {stream!r} must be recorded outside that stream")
        await take_lock(conn)
        r = schema.records
        latest = (
            await conn.execute(
                select(r.c.event_type, r.c.position)
                .where(r.c.stream == stream)
                .order_by(r.c.stream_seq.desc())
                .limit(1)
            )
        ).first()
        if latest is not None and latest[0] == ERASED_EVENT:
            raise AuditError(
                f"stream {stream!r} was erased at position {latest[1]} and nothing was sealed "
                "for it since: there is nothing to erase"
            )
        self._last.forget()  # its cached key of this stream is about to be destroyed
        destroyed = await self.keyring.destroy(conn, stream, to_micros(datetime.now(UTC)))
        if not destroyed:
            raise AuditError(f"stream {stream!r} has no live data key to erase")
        payload = {**dict(details or {}), "actor": dict(actor), "destroyed_keys": destroyed}
        marker, record = await self.append(
            conn,
            [
                NewEvent(stream, ERASED_EVENT, payload),
                NewEvent(record_in, ERASED_EVENT, {**payload, "stream": stream}),
            ],
        )
        return Erasure(marker, record)

    async def rotate_kek(self, conn: AsyncConnection, new_keys: KeyProvider) -> int:
        """Re-wrap every live data key under ``new_keys``' current KEK; records untouched."""
        return await self.keyring.rewrap(conn, new_keys)

    async def data_keys_for(self, conn: AsyncConnection, key_ids: set[str]) -> dict[str, bytes]:
        """Raw data keys (for a plaintext export); destroyed ones are absent."""
        return await self.keyring.raw_keys(conn, key_ids)

    # -- verification and publication --------------------------------------------------

    async def verify_log(
        self,
        conn: AsyncConnection,
        progress: Callable[[int, int], None] | None = None,
        *,
        published: SignedCheckpoint | None = None,
        processes: int = 1,
        snapshot: bool = False,
    ) -> VerifyReport:
        """Verify every record, chain, checkpoint and the tree state; never raises on bad data.

        ``processes`` > 1 verifies segments in worker processes; ``snapshot`` reads a live log
        in one snapshot of its own connection (see :func:`audit.dbverify.verify_database`)."""
        return await verify_database(
            conn,
            self.signer.verifier,
            progress=progress,
            published=published,
            processes=processes,
            snapshot=snapshot,
        )

    async def publish(self, conn: AsyncConnection) -> SignedCheckpoint | None:
        """Publish the latest committed checkpoint (call after commit)."""
        latest = await self.latest_checkpoint(conn)
        if latest is not None and self.publisher is not None:
            self.publisher.publish(latest)
        return latest

    async def check_published(self, conn: AsyncConnection) -> VerifyReport:
        """Compare the database with the last published checkpoint; raises RollbackDetected."""
        published = self.publisher.latest() if self.publisher is not None else None
        report = await self.verify_log(conn, published=published)
        if report.rolled_back:
            raise RollbackDetected(
                str(report.problem), position=report.position, record_id=report.record_id
            )
        return report

    async def export_bundle(
        self, conn: AsyncConnection, stream: str, *, include_plaintext: bool
    ) -> bytes:
        from audit.bundle import build_bundle

        return await build_bundle(self, conn, stream, include_plaintext=include_plaintext)
