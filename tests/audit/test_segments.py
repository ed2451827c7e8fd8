"""Verification in segments (``audit.segments``) and the shared hot loop (``audit.scan``):
the same verdict as one pass, in worker processes too; misuse is refused; rows the fast
encoding cannot take (a driver's memoryviews, odd lengths) go the slow way and still verify.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from audit.checkpoint import CheckpointSigner
from audit.errors import VerificationError
from audit.merkle import Frontier
from audit.records import FieldCodec, Record, record_leaf_hash
from audit.sealing import NewEvent, StreamHead, seal_batch
from audit.segments import SegmentResult, feed_segments, plan
from audit.verify import LogVerifier

LOG_ID = "segments.test/log"
SIGNER = CheckpointSigner.generate(LOG_ID)
CIPHER = AESGCM(AESGCM.generate_key(256))
FIELDS = [f.name for f in dataclasses.fields(Record)]


def build(batches: int, per: int) -> tuple[list[Record], dict[int, str], Frontier]:
    frontier, heads = Frontier(), dict[str, StreamHead]()
    records: list[Record] = []
    checkpoints: dict[int, str] = {}
    for b in range(batches):
        events = [NewEvent(f"HD-{(b + i) % 5}", "e", {"b": b, "i": i}) for i in range(per)]
        records += seal_batch(LOG_ID, events, frontier, heads, lambda s: ("k", CIPHER)).records
        checkpoints[frontier.size] = SIGNER.sign(frontier.size, frontier.root()).note
    return records, checkpoints, frontier


RECORDS, CHECKPOINTS, FRONTIER = build(12, 25)  # 300 records
ROWS: list[tuple[Any, ...]] = [tuple(getattr(r, f) for f in FIELDS) for r in RECORDS]


def fetch(start: int, count: int) -> Sequence[Any]:
    """Module level, so it pickles; the forked workers see ``ROWS`` as the test set it."""
    return ROWS[start : start + count]


def outcome(run: Any) -> tuple[str, int | None, str | None, int] | int:
    checker = LogVerifier(LOG_ID, SIGNER.verifier, CHECKPOINTS)
    try:
        run(checker)
        return checker.finish(FRONTIER.size, FRONTIER.root()).size
    except VerificationError as exc:
        return (str(exc), exc.position, exc.record_id, checker.verified)


def in_workers(checker: LogVerifier) -> None:
    feed_segments(checker, len(ROWS), fetch, processes=2, segment=64, context="fork")


def test_workers_verify_like_one_pass() -> None:
    assert outcome(in_workers) == outcome(lambda c: c.feed_rows(ROWS)) == len(ROWS)
    one = LogVerifier(LOG_ID, SIGNER.verifier, CHECKPOINTS)
    in_workers(one)
    assert one.frontier.root() == FRONTIER.root()
    assert one.heads == LogVerifier(LOG_ID, SIGNER.verifier, {}).heads | {
        s: (q, h) for s, q, h in ((r.stream, r.stream_seq, r.leaf_hash) for r in RECORDS)
    }


@pytest.mark.parametrize("index", [3, 64, 130, 299])
def test_workers_name_the_first_bad_record(index: int) -> None:
    original = ROWS[index]
    bad = list(original)
    bad[9] = bytes([bad[9][0] ^ 1]) + bad[9][1:]  # one flipped ciphertext bit
    ROWS[index] = tuple(bad)
    try:
        found = outcome(in_workers)
        assert found == outcome(lambda c: c.feed_rows(ROWS))
        assert isinstance(found, tuple)
        assert found[1:] == (index, original[1], index)
    finally:
        ROWS[index] = original


def test_segments_must_be_aligned_powers_of_two() -> None:
    checker = LogVerifier(LOG_ID, SIGNER.verifier, CHECKPOINTS)
    with pytest.raises(ValueError, match="power of two"):
        plan(checker, len(ROWS), fetch, 48)
    checker.feed_rows(ROWS[:5])
    with pytest.raises(ValueError, match="cannot start at 5"):
        plan(checker, len(ROWS), fetch, 4)
    with pytest.raises(ValueError, match="does not continue"):
        checker.absorb(SegmentResult(start=8, count=1))
    four = LogVerifier(LOG_ID, SIGNER.verifier, CHECKPOINTS)
    four.feed_rows(ROWS[:4])
    with pytest.raises(ValueError, match="does not continue"):  # 8 leaves cannot follow 4
        four.absorb(SegmentResult(start=4, count=8))


def test_rows_the_fast_encoding_cannot_take_go_the_slow_way() -> None:
    as_views = [(*r[:8], memoryview(r[8]), *r[9:]) for r in ROWS]  # struct refuses views
    assert outcome(lambda c: c.feed_rows(as_views)) == len(ROWS)
    # A forger's record id of another length, re-hashed: the hash is right, so the fast
    # loop's refusal must not be the verdict; the broken chain after it is.
    odd = dataclasses.replace(RECORDS[10], record_id=RECORDS[10].record_id + "x")
    odd = dataclasses.replace(odd, leaf_hash=record_leaf_hash(LOG_ID, odd))
    rows = [*ROWS[:10], tuple(getattr(odd, f) for f in FIELDS), *ROWS[11:]]
    found = outcome(lambda c: c.feed_rows(rows))
    assert isinstance(found, tuple)
    assert found[1] > 10
    assert "link" in found[0] or "checkpoint" in found[0]


def test_layout_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FieldCodec, "CACHE_SIZE", 2)
    assert outcome(lambda c: c.feed_rows(ROWS)) == len(ROWS)
