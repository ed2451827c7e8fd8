"""Verifying a log in segments, in several processes, with the same verdict as one pass.

The rows are cut into segments of a power-of-two size ``2^k``, each starting at a multiple of
it: the leaves of such a segment form the tree's own aligned subtrees, so a worker can build
the segment's part of the Merkle frontier from an empty tree, and the parent joins it to the
frontier before it (RFC 9162's tree is left-balanced: the frontier at any size is the roots of
aligned perfect subtrees). A worker checks positions, leaf hashes and every ticket link inside
its segment; a ticket's first record in the segment is linked to the ticket's head by the
parent (:meth:`audit.verify.LogVerifier.absorb`), which also checks the roots at the marks
(checkpoints) in the segment, in log order, so the first problem named is the one a single
pass would name.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from audit.errors import VerificationError
from audit.merkle import Frontier
from audit.records import FieldCodec, record_leaf_hash
from audit.scan import First, Head, scan
from audit.verify import LogVerifier, record_problem, row_to_record
from audit.workers import Workers

Fetch = Callable[[int, int], Iterable[Sequence[Any]]]
"""``fetch(start, count)``: the ``count`` rows after the first ``start`` in log order (a
database: the ``count`` rows of smallest position ``>= start``, or with no lower bound for 0)."""

Mark = tuple[int, int, str, list[bytes]]  # size, position, record id, segment's subtree roots

DEFAULT_SEGMENT = 1 << 16


@dataclass
class SegmentResult:
    """What a worker found in rows ``start`` .. ``start + count - 1`` (all passed), and the
    problem of the row after them, if any."""

    start: int
    count: int = 0
    firsts: list[First] = field(default_factory=list)
    heads: dict[str, Head] = field(default_factory=dict)
    marks: list[Mark] = field(default_factory=list)
    nodes: list[bytes] = field(default_factory=list)
    error: tuple[str, int | None, str | None] | None = None


def verify_segment(
    log_id: str, start: int, rows: Iterable[Sequence[Any]], marks: Sequence[int]
) -> SegmentResult:
    """Verify ``rows`` as the records at ``start``, ``start + 1``, ... on their own."""
    result = SegmentResult(start)
    frontier = Frontier()

    def on_mark(size: int, position: int, record_id: str) -> None:
        result.marks.append((size, position, record_id, list(frontier.nodes)))

    def recheck(row: Sequence[Any], expected: int, head: Head | None) -> bytes:
        record = row_to_record(row)
        problem = record_problem(record, record_leaf_hash(log_id, record), expected, head)
        if problem is not None:
            raise problem
        return record.leaf_hash

    try:
        scan(
            FieldCodec(log_id),
            rows,
            start,
            result.heads,
            result.firsts,
            frontier,
            marks,
            on_mark,
            recheck,
        )
    except VerificationError as exc:
        result.error = (str(exc), exc.position, exc.record_id)
    result.count = frontier.size
    result.nodes = frontier.nodes
    return result


Job = tuple[str, int, int, list[int], Fetch]


def plan(checker: LogVerifier, total: int, fetch: Fetch, segment: int) -> list[Job]:
    """The jobs that verify rows ``checker.frontier.size`` .. ``total - 1`` after ``checker``."""
    start = checker.frontier.size
    if segment < 1 or segment & (segment - 1) or start % segment:
        raise ValueError(f"segments of {segment} cannot start at {start}: use a power of two")
    marks = checker.marks()
    jobs: list[Job] = []
    for a in range(start, total, segment):
        b = min(a + segment, total)
        jobs.append((checker.log_id, a, b - a, [m for m in marks if a < m <= b], fetch))
    return jobs


def run_job(job: Job) -> SegmentResult:
    log_id, start, count, marks, fetch = job
    rows = fetch(start, count)
    try:
        result = verify_segment(log_id, start, rows, marks)
    finally:
        if isinstance(rows, Generator):  # it may hold a connection: close it now
            rows.close()
    if result.error is None and result.count < count:
        # Only a log that shrank under the verifier does this (the planner counted the rows
        # first): the next segment could not continue this one's tree.
        result.error = (
            f"the log changed while it was verified: {count} records expected from position "
            f"{start}, {result.count} found",
            start + result.count,
            None,
        )
    return result


def feed_segments(
    checker: LogVerifier,
    total: int,
    fetch: Fetch,
    *,
    processes: int = 1,
    segment: int = DEFAULT_SEGMENT,
    context: str | None = None,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Verify the first ``total`` rows after what ``checker`` has seen, ``processes`` workers
    at a time (1: in this process), and feed them to it; raises its first problem.

    With more than one process, ``fetch`` runs in the workers and must pickle (a module-level
    function, or a ``functools.partial`` of one); ``context`` is the multiprocessing start
    method (``fork`` lets the workers see the parent's memory). ``progress(size)`` is called
    with the records verified so far after each segment joins the tree. Setting ``stop``
    (from another thread) ends the workers and raises :class:`audit.workers.Stopped` within
    :data:`audit.workers.POLL_SECONDS`; the workers ignore SIGINT, so a Ctrl-C reaches only
    the parent, which decides.
    """
    jobs = plan(checker, total, fetch, segment)
    if processes <= 1 or len(jobs) <= 1:
        _absorb_all(checker, map(run_job, jobs), progress)
        return
    with Workers(multiprocessing.get_context(context), min(processes, len(jobs)), run_job) as w:
        # In the jobs' order; leaving the block (a problem, a stop) ends the workers.
        _absorb_all(checker, w.map(jobs, stop), progress)


def _absorb_all(
    checker: LogVerifier,
    results: Iterator[SegmentResult],
    progress: Callable[[int], None] | None,
) -> None:
    for result in results:
        checker.absorb(result)
        if progress is not None:
            progress(checker.frontier.size)
