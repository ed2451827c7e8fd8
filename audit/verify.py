"""Verification of a whole log, record by record, without any decryption key.

:class:`LogVerifier` is fed records in log order and stops at the first problem with a
message naming the record (position and id). It recomputes every leaf hash from the record's
fields, checks each ticket's chain, rebuilds the Merkle tree and compares its root with every
signed checkpoint, the stored tree state and, if given, a checkpoint published elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from audit.errors import RollbackDetected, VerificationError
from audit.merkle import Frontier
from audit.records import FieldCodec, Record, record_leaf_hash
from audit.scan import NO_HEAD, Head, scan

if TYPE_CHECKING:
    # Annotations only: a segment worker (which imports this module) never loads the
    # signature library.
    from audit.checkpoint import SignedCheckpoint, VerifierKey
    from audit.segments import SegmentResult


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


def chain_problem(stream: str, seq: int, prev: bytes, head: Head) -> str | None:
    """What is wrong with a record's link to its ticket's previous record, if anything."""
    last_seq, last_hash = head
    if seq != last_seq + 1:
        return (
            f"stream {stream!r}: sequence {seq} follows {last_seq}: "
            "a record of this ticket is missing, duplicated or out of order"
        )
    if prev != last_hash:
        return f"stream {stream!r}: record does not link to the ticket's previous one"
    return None


def record_problem(
    r: Record, leaf: bytes, expected: int, head: Head | None
) -> VerificationError | None:
    """The first thing wrong with ``r`` as the record at ``expected``, in a fixed order
    (``leaf`` is its recomputed hash; ``head`` None: leave its chain link unchecked)."""

    def bad(message: str) -> VerificationError:
        return VerificationError(message, position=r.position, record_id=r.record_id)

    if r.position != expected:
        return bad(
            f"log position {r.position} where {expected} was expected: records are "
            "missing, duplicated, inserted or reordered"
        )
    if leaf != r.leaf_hash:
        return bad(f"record at position {r.position} was altered: its hash does not match")
    problem = None if head is None else chain_problem(r.stream, r.stream_seq, r.prev_hash, head)
    return None if problem is None else bad(problem)


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
    uncovered: int = 0  # records after the latest signed checkpoint (consistent, not signed)

    @property
    def covered(self) -> int:
        """Records covered by a signed checkpoint (the authenticated prefix)."""
        return self.size - self.uncovered

    def verdict(self) -> str:
        if self.ok:
            text = (
                f"OK: {self.size} records in {self.streams} streams verified; "
                f"signed checkpoint at size {self.checkpoint_size}"
            )
            if self.uncovered:
                text += (
                    f"; NOT YET COVERED: the last {self.uncovered} records (positions "
                    f"{self.covered}-{self.size - 1}) are consistent but no signed checkpoint "
                    "covers them yet (checkpoints are signed on a cadence)"
                )
            return text
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
        self._failed_at: int | None = None  # set by :meth:`absorb` before it raises

    @property
    def verified(self) -> int:
        """How many records passed every check (all of them, unless a check failed)."""
        return self.frontier.size if self._failed_at is None else self._failed_at

    def want_root_at(self, size: int) -> None:
        self._extra_sizes.add(size)

    def feed(self, r: Record) -> None:
        problem = record_problem(
            r,
            record_leaf_hash(self.log_id, r),
            self.frontier.size,
            self.heads.get(r.stream, NO_HEAD),
        )
        if problem is not None:
            raise problem
        self.heads[r.stream] = (r.stream_seq, r.leaf_hash)
        self.frontier.append(r.leaf_hash)
        size = self.frontier.size
        if size in self.checkpoints or size in self._extra_sizes:
            self._at_mark(size, r.position, r.record_id)

    def marks(self) -> list[int]:
        """The sizes at which a root is checked or wanted, ascending."""
        return sorted({*self.checkpoints, *self._extra_sizes})

    def _at_mark(self, size: int, position: int, record_id: str) -> None:
        self._check_root(size, self.frontier.root(), position, record_id)

    def _check_root(self, size: int, root: bytes, position: int, record_id: str) -> None:
        self.roots_seen[size] = root
        note = self.checkpoints.get(size)
        if note is not None:
            self._check_checkpoint(note, size, root, position, record_id)

    def recheck(self, row: Sequence[Any], expected: int, head: Head | None) -> bytes:
        """The slow, general check of one row (see :data:`audit.scan.Recheck`)."""
        record = row_to_record(row)
        problem = record_problem(record, record_leaf_hash(self.log_id, record), expected, head)
        if problem is not None:
            raise problem
        return record.leaf_hash

    def feed_rows(self, rows: Iterable[Sequence[Any]]) -> None:
        """:meth:`feed` for rows in ``Record`` field order (as the database returns them),
        through the hot loop of :func:`audit.scan.scan`: no object per record, checkpoints
        looked at only at their sizes, anything unexpected rechecked by :meth:`recheck`."""
        scan(
            self._codec,
            rows,
            self.frontier.size,
            self.heads,
            None,
            self.frontier,
            self.marks(),
            self._at_mark,
            self.recheck,
        )

    def absorb(self, seg: SegmentResult) -> None:
        """Take a segment verified elsewhere (:func:`audit.segments.verify_segment`) as the
        next records: link each ticket's first record in it to the ticket's head, check the
        roots at its marks and the segment's own problem, in log order, then extend the tree.
        """
        base = self.frontier
        if seg.start != base.size or seg.start % (1 << max(seg.count - 1, 0).bit_length()):
            raise ValueError(f"segment at {seg.start} does not continue a tree of {base.size}")
        end = seg.start + seg.count
        firsts = [f for f in seg.firsts if f[0] < end]  # past ``end``: the failing record
        marks = iter(seg.marks)
        mark = next(marks, None)
        for index, rid, stream, seq, prev in firsts:
            while mark is not None and mark[0] <= index:
                self._absorb_mark(base, *mark)
                mark = next(marks, None)
            problem = chain_problem(stream, seq, prev, self.heads.get(stream, NO_HEAD))
            if problem is not None:
                self._failed_at = index
                raise VerificationError(problem, position=index, record_id=rid)
        while mark is not None:
            self._absorb_mark(base, *mark)
            mark = next(marks, None)
        if seg.error is not None:
            self._failed_at = end
            raise VerificationError(seg.error[0], position=seg.error[1], record_id=seg.error[2])
        self.heads.update(seg.heads)
        self.frontier = base.joined(seg.count, seg.nodes)
        self._failed_at = None

    def _absorb_mark(
        self, base: Frontier, size: int, position: int, record_id: str, nodes: list[bytes]
    ) -> None:
        self._failed_at = size  # should the root be wrong: the records up to it passed
        self._check_root(size, base.joined(size - base.size, nodes).root(), position, record_id)

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
        # Checkpoints are signed on a cadence: the records after the latest one are checked
        # (hashes, chains, tree) but not yet authenticated, and are reported as such.
        covered = max(self.checkpoints, default=0)
        if tree_size is not None and (tree_size != size or tree_root != root):
            raise VerificationError(
                f"stored tree state (size {tree_size}) does not match the records (size {size})"
            )
        return VerifyReport(
            ok=True,
            size=size,
            root=root,
            checkpoint_size=covered or None,
            streams=len(self.heads),
            uncovered=size - covered,
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
