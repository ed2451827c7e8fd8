"""Property-based tampering: every change to a sealed log is caught by :class:`LogVerifier`.

The log is built once, in memory, with :func:`audit.sealing.seal_batch` (three tickets, a
signed checkpoint per batch, as the store does). Each example tampers with a copy: modifies a
field (optionally re-hashing the record, as a forger would), deletes, reorders, inserts,
duplicates or truncates records, swaps ciphertexts, or replays/drops checkpoints; another
property builds a fresh small log per example and tampers with one byte of it. Every check runs
both verifier paths (``feed`` per record, ``feed_rows`` as ``verify_database`` uses) and holds
them to the same verdict. The properties carry their own example counts (``TAMPER`` and the
others): about 11,800 examples in every run whatever the profile (counted in docs/AUDIT.md).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.checkpoint import CheckpointSigner, SignedCheckpoint, parse_checkpoint
from audit.errors import AuditError, RollbackDetected, VerificationError
from audit.merkle import Frontier
from audit.records import Record, record_leaf_hash
from audit.sealing import NewEvent, StreamHead, open_record, seal_batch
from audit.segments import feed_segments
from audit.verify import LogVerifier, VerifyReport

LOG_ID = "tamper.test/log"
FIELDS = [f.name for f in dataclasses.fields(Record)]
SIGNER = CheckpointSigner.generate(LOG_ID)
STREAMS = ["HD-1", "HD-2", "HD-3"]
KEYS = {s: AESGCM(AESGCM.generate_key(256)) for s in STREAMS}


def _build() -> tuple[list[Record], dict[int, str], Frontier]:
    frontier = Frontier()
    heads: dict[str, StreamHead] = {}
    records: list[Record] = []
    checkpoints: dict[int, str] = {}
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for batch in range(8):
        events = [
            NewEvent(STREAMS[(batch + i) % 3], f"event.{i}", {"batch": batch, "i": i, "x": "y" * i})
            for i in range(1 + batch % 4)
        ]
        sealed = seal_batch(LOG_ID, events, frontier, heads, lambda s: (s, KEYS[s]), at)
        records.extend(sealed.records)
        checkpoints[frontier.size] = SIGNER.sign(frontier.size, frontier.root()).note
    return records, checkpoints, frontier


RECORDS, CHECKPOINTS, FRONTIER = _build()
N = len(RECORDS)
SIZES = sorted(CHECKPOINTS)


TAMPER = settings(max_examples=2_500, deadline=None)


def _as_row(r: Record) -> tuple[object, ...]:
    return tuple(getattr(r, name) for name in FIELDS)


def verify(
    records: list[Record],
    checkpoints: dict[int, str] = CHECKPOINTS,
    published: SignedCheckpoint | None = None,
    tree: tuple[int, bytes] | None = None,
) -> VerifyReport:
    """All verifier paths (per record, rows, segments of 4 and of 1); they must agree on the
    verdict, the message, the record and how many records passed."""
    outcomes: list[VerifyReport | VerificationError] = []
    verified: list[int] = []
    rows = [_as_row(r) for r in records]
    for path in ("feed", "rows", 4, 1):
        checker = LogVerifier(LOG_ID, SIGNER.verifier, checkpoints)
        if published is not None:
            checker.want_root_at(published.size)
        try:
            if path == "rows":
                checker.feed_rows(rows)
            elif path == "feed":
                for r in records:
                    checker.feed(r)
            else:
                assert isinstance(path, int)
                feed_segments(checker, len(rows), lambda a, n: rows[a : a + n], segment=path)
            outcomes.append(checker.finish(*(tree or (None, None)), published))
        except VerificationError as exc:
            outcomes.append(exc)
        verified.append(checker.verified)
    one = outcomes[0]
    assert len(set(verified)) == 1, verified
    if isinstance(one, VerificationError):
        for other in outcomes[1:]:
            assert isinstance(other, VerificationError)
            assert (type(other), str(other), other.position, other.record_id) == (
                type(one),
                str(one),
                one.position,
                one.record_id,
            )
        raise one
    assert all(other == one for other in outcomes[1:])
    return one


def signed(size: int) -> SignedCheckpoint:
    note = CHECKPOINTS[size]
    return SignedCheckpoint(parse_checkpoint(note.partition("\n\n")[0] + "\n"), note)


def rehash(r: Record) -> Record:
    return dataclasses.replace(r, leaf_hash=record_leaf_hash(LOG_ID, r))


def changed(value: object, k: int) -> object:
    if isinstance(value, bytes):
        i = k % max(len(value), 1)
        if not value:
            return b"\x00"
        return value[:i] + bytes([value[i] ^ (1 << (k % 8))]) + value[i + 1 :]
    if isinstance(value, int):
        return value + (k % 1000 or 1) * (1 if k % 2 else -1)
    assert isinstance(value, str)
    return value + chr(0x41 + k % 26) if k % 3 else value[:-1] + "\u00e9"


def test_untouched_log_verifies() -> None:
    report = verify(RECORDS, tree=(FRONTIER.size, FRONTIER.root()))
    assert report.ok
    assert report.size == N
    assert report.streams == 3
    assert report.checkpoint_size == N
    assert report.root == FRONTIER.root()
    assert report.verdict().startswith(f"OK: {N} records in 3 streams")
    assert verify(RECORDS, published=signed(SIZES[2])).ok
    assert verify(RECORDS, published=signed(N)).ok
    assert verify([], {}).ok
    between = Frontier()
    for r in RECORDS[:4]:
        between.append(r.leaf_hash)
    assert 4 not in CHECKPOINTS  # a published head need not be one the database kept
    assert verify(RECORDS, published=SIGNER.sign(4, between.root())).ok
    for r in RECORDS:
        assert open_record(LOG_ID, r, KEYS[r.stream])


@pytest.mark.slow  # thousands of examples: `make test` runs it, `make test-fast` not
@TAMPER
@given(
    index=st.integers(0, N - 1),
    field=st.sampled_from(FIELDS),
    k=st.integers(1, 10**6),
    forge=st.booleans(),
)
def test_modified_field_is_detected(index: int, field: str, k: int, forge: bool) -> None:
    records = list(RECORDS)
    r = dataclasses.replace(records[index], **{field: changed(getattr(records[index], field), k)})
    records[index] = rehash(r) if forge and field != "leaf_hash" else r
    with pytest.raises(VerificationError) as info:
        verify(records)
    assert info.value.position is not None


OPS = ["delete", "swap", "insert_copy", "duplicate", "insert_forged", "move", "truncate"]


@pytest.mark.slow  # thousands of examples: `make test` runs it, `make test-fast` not
@TAMPER
@given(op=st.sampled_from(OPS), i=st.integers(0, N - 1), j=st.integers(0, N - 1))
def test_structural_change_is_detected(op: str, i: int, j: int) -> None:
    records = list(RECORDS)
    if op == "delete":
        del records[i]
    elif op == "swap":
        if i == j:
            j = (i + 1) % N
        records[i], records[j] = records[j], records[i]
    elif op == "insert_copy":
        records.insert(i, RECORDS[j])
    elif op == "duplicate":
        records.insert(i + 1, RECORDS[i])
    elif op == "insert_forged":
        forged = rehash(dataclasses.replace(RECORDS[j], position=i, record_id=f"forged-{i}"))
        records = [
            *records[:i],
            forged,
            *(rehash(dataclasses.replace(r, position=r.position + 1)) for r in records[i:]),
        ]
    elif op == "move":
        records.insert(j, records.pop(i) if i != j else records.pop((i + 1) % N))
        if records == RECORDS:
            records.pop()
    else:
        records = records[: min(i, N - 1)]
    with pytest.raises(VerificationError):
        verify(records)


@pytest.mark.slow  # thousands of examples: `make test` runs it, `make test-fast` not
@TAMPER
@given(
    i=st.integers(0, N - 1),
    j=st.integers(0, N - 1),
    forge=st.booleans(),
    what=st.sampled_from(["nonce+ciphertext", "ciphertext", "nonce"]),
)
def test_swapped_ciphertexts_are_detected(i: int, j: int, forge: bool, what: str) -> None:
    if RECORDS[i].ciphertext == RECORDS[j].ciphertext:
        j = (i + 1) % N
    a, b = RECORDS[i], RECORDS[j]
    moved = dataclasses.replace(
        a,
        nonce=b.nonce if "nonce" in what else a.nonce,
        ciphertext=b.ciphertext if "ciphertext" in what else a.ciphertext,
    )
    # AAD binding: the moved ciphertext does not decrypt in its new row, even with the key of
    # the ticket it came from (nor does a ciphertext under another row's nonce).
    for key in {a.stream, b.stream}:
        with pytest.raises(InvalidTag):
            open_record(LOG_ID, moved, KEYS[key])
    records = list(RECORDS)
    records[i] = rehash(moved) if forge else moved
    with pytest.raises(VerificationError):
        verify(records)


@TAMPER
@given(
    op=st.sampled_from(["replay", "drop_latest", "drop_any", "garble", "resign_other"]),
    i=st.integers(0, len(SIZES) - 1),
    j=st.integers(0, len(SIZES) - 1),
)
def test_checkpoint_tampering_is_detected(op: str, i: int, j: int) -> None:
    checkpoints = dict(CHECKPOINTS)
    size = SIZES[i]
    if op == "replay":
        other = SIZES[j] if i != j else SIZES[(i + 1) % len(SIZES)]
        checkpoints[size] = CHECKPOINTS[other]
    elif op == "drop_latest":
        del checkpoints[N]
    elif op == "drop_any":
        del checkpoints[SIZES[-1]]
        checkpoints.pop(size, None)
    elif op == "garble":
        checkpoints[size] = CHECKPOINTS[size].replace("\u2014", "-")
    else:
        stranger = CheckpointSigner.generate(LOG_ID)
        checkpoints[size] = stranger.sign(
            size, parse_checkpoint(CHECKPOINTS[size].partition("\n\n")[0] + "\n").root
        ).note
    if op.startswith("drop"):
        # Checkpoints are signed on a cadence: a log whose latest checkpoints are missing
        # looks like one whose tail is not signed yet. Never "OK" for those records: the
        # report names them as not yet covered (a published checkpoint shows the deletion).
        report = verify(RECORDS, checkpoints)
        covered = max(checkpoints)
        assert report.ok
        assert report.uncovered == N - covered > 0
        assert "NOT YET COVERED" in report.verdict()
        return
    with pytest.raises(VerificationError):
        verify(RECORDS, checkpoints)


@settings(deadline=None)  # 56 cases in all: Hypothesis stops when it has seen them
@given(k=st.integers(0, len(SIZES) - 2), p=st.integers(0, len(SIZES) - 1))
def test_truncated_tail_with_checkpoints_needs_publication(k: int, p: int) -> None:
    """Cutting records *and* their checkpoints leaves a valid shorter log: only a checkpoint
    published elsewhere shows it (documented in docs/AUDIT.md)."""
    size = SIZES[k]
    records = RECORDS[:size]
    checkpoints = {s: n for s, n in CHECKPOINTS.items() if s <= size}
    assert verify(records, checkpoints).ok
    published = signed(SIZES[p])
    if published.size > size:
        with pytest.raises(RollbackDetected, match="rolled back"):
            verify(records, checkpoints, published=published)
    else:
        assert verify(records, checkpoints, published=published).ok


def test_fork_against_published_is_detected() -> None:
    other = CheckpointSigner(SIGNER._key, LOG_ID)  # same key, a root the records never had
    forged = other.sign(SIZES[1], b"\x07" * 32)
    with pytest.raises(RollbackDetected, match="forked"):
        verify(RECORDS, published=forged)
    same_size = other.sign(N, b"\x07" * 32)
    with pytest.raises(RollbackDetected, match="forked"):
        verify(RECORDS, published=same_size)
    stranger = CheckpointSigner.generate(LOG_ID).sign(N, FRONTIER.root())
    with pytest.raises(VerificationError, match="not signed by"):
        verify(RECORDS, published=stranger)


def test_stored_tree_state_must_match() -> None:
    with pytest.raises(VerificationError, match="stored tree state"):
        verify(RECORDS, tree=(N - 1, FRONTIER.root()))
    with pytest.raises(VerificationError, match="stored tree state"):
        verify(RECORDS, tree=(N, b"\x00" * 32))


def test_failed_report_names_the_record() -> None:
    report = VerifyReport(ok=False, size=3, problem="bad", position=2, record_id="r-2")
    assert report.verdict() == "FAILED: bad (first bad record: position 2, id r-2)"
    assert VerifyReport(ok=False, size=0, problem="bad").verdict() == "FAILED: bad"


def test_seal_batch_refuses_bad_events() -> None:
    frontier, heads = Frontier(), {}
    for event in [
        NewEvent("", "x", {}),
        NewEvent("s" * 201, "x", {}),
        NewEvent("HD-1", "", {}),
        NewEvent("HD-1", "e" * 101, {}),
    ]:
        with pytest.raises(AuditError):
            seal_batch(LOG_ID, [event], frontier, heads, lambda s: (s, KEYS["HD-1"]))
    sealed = seal_batch(
        LOG_ID, [NewEvent("HD-1", "x", {})], frontier, heads, lambda s: (s, KEYS["HD-1"])
    )
    assert sealed.records[0].occurred_at.tzinfo is UTC


@pytest.mark.slow  # thousands of examples: `make test` runs it, `make test-fast` not
@settings(max_examples=4_000, deadline=None)
@given(
    plan=st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=12),
    target=st.integers(0, 10**6),
    bit=st.integers(0, 7),
)
def test_fresh_small_logs_verify_and_any_flipped_bit_is_caught(
    plan: list[tuple[int, bool]], target: int, bit: int
) -> None:
    """A log built per example (tickets and batch breaks drawn) verifies untouched; flipping
    any one bit of any stored field of any record is then caught."""
    frontier, heads, records, checkpoints = Frontier(), dict[str, StreamHead](), [], {}
    batch: list[NewEvent] = []
    for i, (stream, cut) in enumerate(plan):
        batch.append(NewEvent(STREAMS[stream], "e", {"i": i}))
        if cut or i == len(plan) - 1:
            sealed = seal_batch(LOG_ID, batch, frontier, heads, lambda s: (s, KEYS[s]))
            records += sealed.records
            checkpoints[frontier.size] = SIGNER.sign(frontier.size, frontier.root()).note
            batch = []
    assert verify(records, checkpoints, tree=(frontier.size, frontier.root())).ok
    index = target % len(records)
    field = FIELDS[target // len(records) % len(FIELDS)]
    value = getattr(records[index], field)
    if isinstance(value, bytes):
        flipped: object = changed(value, target // 7 * 8 + bit)
    else:
        flipped = changed(value, target + 1)
    records[index] = dataclasses.replace(records[index], **{field: flipped})
    with pytest.raises(VerificationError):
        verify(records, checkpoints)
