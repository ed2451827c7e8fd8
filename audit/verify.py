"""Verification of a whole log, record by record, without any decryption key.

:class:`LogVerifier` is fed records in log order and stops at the first problem with a
message naming the record (position and id). It recomputes every leaf hash from the record's
fields, checks each ticket's chain, rebuilds the Merkle tree and compares its root with every
signed checkpoint, the stored tree state and, if given, a checkpoint published elsewhere.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from audit.checkpoint import SignedCheckpoint, VerifierKey
from audit.errors import RollbackDetected, VerificationError
from audit.merkle import Frontier
from audit.records import ZERO_HASH, FieldCodec, Record, record_leaf_hash

_Q = struct.Struct(">q")
_I = struct.Struct(">I")
_HASH_LEN = _I.pack(32)
_NO_HEAD = (0, ZERO_HASH)


def row_to_record(row: Sequence[Any]) -> Record:
    """A database row (columns in ``Record`` order; drivers may return memoryviews)."""
    return Record(
        int(row[0]),
        row[1],
        row[2],
        int(row[3]),
        row[4],
        int(row[5]),
        row[6],
        int(row[7]),
        bytes(row[8]),
        bytes(row[9]),
        bytes(row[10]),
        bytes(row[11]),
    )


@dataclass
class VerifyReport:
    ok: bool
    size: int
    root: bytes | None = None
    checkpoint_size: int | None = None
    problem: str | None = None
    position: int | None = None
    record_id: str | None = None
    streams: int = 0
    rolled_back: bool = False  # behind or diverging from the published checkpoint

    def verdict(self) -> str:
        if self.ok:
            return (
                f"OK: {self.size} records in {self.streams} streams verified; "
                f"signed checkpoint at size {self.checkpoint_size}"
            )
        where = ""
        if self.position is not None:
            where = f" (first bad record: position {self.position}, id {self.record_id})"
        return f"FAILED: {self.problem}{where}"


class LogVerifier:
    """Feed records (:meth:`feed`) or rows (:meth:`feed_rows`) in position order, then call
    :meth:`finish`."""

    def __init__(self, log_id: str, verifier: VerifierKey, checkpoints: Mapping[int, str]) -> None:
        self.log_id = log_id
        self.verifier = verifier
        self.checkpoints = dict(checkpoints)
        self.frontier = Frontier()
        self.heads: dict[str, tuple[int, bytes]] = {}
        self.roots_seen: dict[int, bytes] = {}
        self._extra_sizes: set[int] = set()
        self._codec = FieldCodec(log_id)

    def want_root_at(self, size: int) -> None:
        self._extra_sizes.add(size)

    def feed(self, r: Record) -> None:
        problem = self._problem(r, record_leaf_hash(self.log_id, r))
        if problem is not None:
            raise problem
        self.heads[r.stream] = (r.stream_seq, r.leaf_hash)
        self.frontier.append(r.leaf_hash)
        size = self.frontier.size
        if size in self.checkpoints or size in self._extra_sizes:
            self._at_mark(size, r.position, r.record_id)

    def _problem(self, r: Record, leaf: bytes) -> VerificationError | None:
        """The first thing wrong with ``r`` as the next record, in a fixed order."""

        def bad(message: str) -> VerificationError:
            return VerificationError(message, position=r.position, record_id=r.record_id)

        expected = self.frontier.size
        if r.position != expected:
            return bad(
                f"log position {r.position} where {expected} was expected: records are "
                "missing, duplicated, inserted or reordered"
            )
        if leaf != r.leaf_hash:
            return bad(f"record at position {r.position} was altered: its hash does not match")
        last_seq, last_hash = self.heads.get(r.stream, _NO_HEAD)
        if r.stream_seq != last_seq + 1:
            return bad(
                f"stream {r.stream!r}: sequence {r.stream_seq} follows {last_seq}: "
                "a record of this ticket is missing, duplicated or out of order"
            )
        if r.prev_hash != last_hash:
            return bad(f"stream {r.stream!r}: record does not link to the ticket's previous one")
        return None

    def _at_mark(self, size: int, position: int, record_id: str) -> None:
        root = self.frontier.root()
        self.roots_seen[size] = root
        note = self.checkpoints.get(size)
        if note is not None:
            self._check_checkpoint(note, size, root, position, record_id)

    def feed_rows(self, rows: Iterable[Sequence[Any]]) -> None:
        """:meth:`feed` for rows in ``Record`` field order (as the database returns them).

        The verification hot loop: no object per record, the leaf encoding built inline from
        cached pieces (the same bytes as :func:`record_leaf_hash`; a test holds them equal),
        the frontier updated in place, checkpoints looked at only at their sizes. Anything
        unexpected goes to :meth:`feed`'s checks, which name the problem.
        """
        frontier, heads, codec = self.frontier, self.heads, self._codec
        size = frontier.size
        marks = sorted(s for s in {*self.checkpoints, *self._extra_sizes} if s > size)
        marks.append(-1)  # never reached
        mark = 0
        next_mark = marks[0]
        leaves: list[bytes] = []  # verified leaves not yet in the frontier
        prefix, known, enc = codec.leaf_prefix, codec.known.get, codec.s
        pack_q, pack_i, sha256, join = _Q.pack, _I.pack, hashlib.sha256, b"".join
        hash_len, no_head = _HASH_LEN, _NO_HEAD
        for row in rows:
            (pos, rid, stream, seq, etype, at, key, psize, nonce, ct, prev, leaf) = row
            last_seq, last_hash = heads.get(stream, no_head)
            rid_b = rid.encode()
            node = sha256(
                join(
                    (
                        prefix,
                        pack_q(pos),
                        pack_i(len(rid_b)),
                        rid_b,
                        known(stream) or enc(stream),
                        pack_q(seq),
                        known(etype) or enc(etype),
                        pack_q(at),
                        known(key) or enc(key),
                        pack_q(psize),
                        pack_i(len(nonce)),
                        nonce,
                        pack_i(len(ct)),
                        ct,
                        hash_len,  # right when ``prev`` passes the check below
                        prev,
                    )
                )
            ).digest()
            if pos != size or node != leaf or seq != last_seq + 1 or prev != last_hash:
                frontier.extend(leaves)
                record = row_to_record(row)
                problem = self._problem(record, record_leaf_hash(self.log_id, record))
                assert problem is not None  # one of the four checks above failed
                raise problem
            heads[stream] = (seq, node)
            leaves.append(node)
            size += 1
            if size == next_mark:
                frontier.extend(leaves)
                leaves = []
                self._at_mark(size, pos, rid)
                mark += 1
                next_mark = marks[mark]
        frontier.extend(leaves)

    def _check_checkpoint(
        self, note: str, size: int, root: bytes, position: int, record_id: str
    ) -> None:
        try:
            checkpoint = self.verifier.verify(note)
        except VerificationError as exc:
            raise VerificationError(
                f"checkpoint at size {size}: {exc}", position=position, record_id=record_id
            ) from exc
        if checkpoint.size != size or checkpoint.root != root:
            raise VerificationError(
                f"signed checkpoint at size {size} does not match the records up to it",
                position=position,
                record_id=record_id,
            )

    def finish(
        self,
        tree_size: int | None,
        tree_root: bytes | None,
        published: SignedCheckpoint | None = None,
    ) -> VerifyReport:
        size = self.frontier.size
        root = self.frontier.root()
        if published is not None:  # strongest evidence first: a head kept outside the database
            self._check_published(published, size, root)
        beyond = sorted(s for s in self.checkpoints if s > size)
        if beyond:
            raise VerificationError(
                f"the log was truncated: a checkpoint was signed at size {beyond[-1]} but only "
                f"{size} records remain",
                position=size,
            )
        if size and size not in self.checkpoints:
            latest = max(self.checkpoints, default=0)
            raise VerificationError(
                f"records after position {latest - 1} are not covered by a signed checkpoint",
                position=latest,
            )
        if tree_size is not None and (tree_size != size or tree_root != root):
            raise VerificationError(
                f"stored tree state (size {tree_size}) does not match the records (size {size})"
            )
        return VerifyReport(
            ok=True,
            size=size,
            root=root,
            checkpoint_size=size if size else None,
            streams=len(self.heads),
        )

    def _check_published(self, published: SignedCheckpoint, size: int, root: bytes) -> None:
        checkpoint = self.verifier.verify(published.note)
        if checkpoint.size > size:
            raise RollbackDetected(
                f"rolled back: a checkpoint at size {checkpoint.size} was published, "
                f"the log has {size} records"
            )
        seen = root if checkpoint.size == size else self.roots_seen.get(checkpoint.size)
        if seen != checkpoint.root:
            raise RollbackDetected(
                f"the log forked: the published checkpoint at size {checkpoint.size} does not "
                "match the records"
            )
