"""Turning events into sealed records: canonical payload, encryption, chain, Merkle leaf.

Pure and synchronous: the store supplies the state (frontier, stream heads, data keys) read
under its lock and writes what this returns. Keeping it free of I/O lets tests and the
benchmark drive it directly and makes the hot path easy to see.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from audit.canonical import canonical_json
from audit.errors import AuditError
from audit.merkle import Frontier, Node
from audit.records import ZERO_HASH, FieldCodec, Record, associated_data, to_micros
from audit.scan import leaf_layout

MAX_STREAM_LENGTH = 200
MAX_EVENT_TYPE_LENGTH = 100


@dataclass(frozen=True)
class NewEvent:
    """An event to append. ``stream`` is the ticket key (``"_system"`` when there is none)."""

    stream: str
    event_type: str
    payload: Mapping[str, Any]
    occurred_at: datetime | None = None


@dataclass
class StreamHead:
    last_seq: int = 0
    last_hash: bytes = ZERO_HASH
    last_position: int = -1


@dataclass
class Sealed:
    records: list[Record] = field(default_factory=list)
    heads: dict[str, StreamHead] = field(default_factory=dict)


Row = tuple[int, str, str, int, str, int, str, int, bytes, bytes, bytes, bytes]
"""A sealed record as a tuple in ``Record`` field order, which is also the column order."""

_Q = struct.Struct(">q")
_I = struct.Struct(">I")
_RID_LEN = _I.pack(36)  # our record ids are always 36 ASCII characters
_HASH_LEN = _I.pack(32)
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_record_ids(count: int, now_ms: int) -> list[str]:
    """``count`` RFC 9562 UUIDv7 strings: the millisecond time, then 74 random bits.

    Time-ordered ids keep the unique index on ``record_id`` appending at its right edge (a
    random UUIDv4 lands anywhere in the B-tree: twice the insert cost at 100,000 rows, and
    worse as the log grows). One ``os.urandom`` call serves the whole batch.
    """
    ts = f"{now_ms & 0xFFFF_FFFF_FFFF:012x}"
    head = f"{ts[:8]}-{ts[8:]}-7"
    rnd = os.urandom(10 * count).hex()
    v = _VARIANT
    return [
        f"{head}{rnd[j : j + 3]}-{v[rnd[j + 3]]}{rnd[j + 4 : j + 7]}-{rnd[j + 7 : j + 19]}"
        for j in range(0, 20 * count, 20)
    ]


def check_events(events: Sequence[NewEvent]) -> None:
    """Refuse a batch with an empty or over-long stream or event type."""
    for event in events:
        if not 0 < len(event.stream) <= MAX_STREAM_LENGTH:
            raise AuditError(f"stream must be 1-{MAX_STREAM_LENGTH} characters")
        if not 0 < len(event.event_type) <= MAX_EVENT_TYPE_LENGTH:
            raise AuditError(f"event type must be 1-{MAX_EVENT_TYPE_LENGTH} characters")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch checked and encoded ahead of the writer's lock (see :func:`prepare`)."""

    events: Sequence[NewEvent]
    plaintexts: list[bytes]
    times: list[int]
    ids: list[str]
    nonces: bytes

    def __len__(self) -> int:
        return len(self.events)


def prepare(events: Sequence[NewEvent], now: datetime | None = None) -> Prepared:
    """What sealing needs that does not depend on the log's state: checks, canonical
    payloads, times, record ids and nonces.

    It raises for a bad event (CanonicalError, AuditError) before anything is written, and it
    runs before the single-writer lock is taken, so the lock is held for less time.
    """
    check_events(events)
    default_time = to_micros(now or datetime.now(UTC))
    return Prepared(
        events,
        [canonical_json(e.payload) for e in events],
        [default_time if e.occurred_at is None else to_micros(e.occurred_at) for e in events],
        new_record_ids(len(events), default_time // 1000),
        os.urandom(12 * len(events)),
    )


def seal_rows(
    codec: FieldCodec,
    events: Sequence[NewEvent] | Prepared,
    frontier: Frontier,
    heads: dict[str, StreamHead],
    cipher_for: Callable[[str], tuple[str, AESGCM]],
    now: datetime | None = None,
    completed: list[Node] | None = None,
) -> list[Row]:
    """Seal ``events`` in order into row tuples, advancing ``frontier`` and ``heads`` in place
    (``completed`` receives the stored-level subtrees the batch completes).

    The hot path of every append: :func:`associated_data` and :func:`leaf_data` are built
    inline from the codec's cached pieces, the leaf data by one ``struct`` call per record
    (:func:`audit.scan.leaf_layout`; tests check they are the same bytes), and the frontier
    takes the leaves in one call. Events go through :func:`prepare` first unless they come
    prepared, so a batch with an invalid event changes nothing.
    """
    ready = events if isinstance(events, Prepared) else prepare(events, now)
    plaintexts, times, ids, nonces = ready.plaintexts, ready.times, ready.ids, ready.nonces
    leaf_prefix, aad_prefix, known, enc = (
        codec.leaf_prefix,
        codec.aad_prefix,
        codec.known.get,
        codec.s,
    )
    pack_q, sha256, join = _Q.pack, hashlib.sha256, b"".join
    rid_len = _RID_LEN
    position = frontier.size
    rows: list[Row] = []
    leaves: list[bytes] = []
    layouts, layout, hash_len = codec.layouts, leaf_layout, _HASH_LEN
    for i, event in enumerate(ready.events):
        stream, event_type = event.stream, event.event_type
        head = heads.get(stream)
        if head is None:
            head = heads[stream] = StreamHead()
        key_id, cipher = cipher_for(stream)
        seq = head.last_seq + 1
        record_id = ids[i]
        rid = record_id.encode()
        nonce = nonces[12 * i : 12 * i + 12]
        plaintext = plaintexts[i]
        stream_enc = known(stream) or enc(stream)
        type_enc = known(event_type) or enc(event_type)
        key_enc = known(key_id) or enc(key_id)
        ciphertext = cipher.encrypt(
            nonce,
            plaintext,
            join((aad_prefix, rid_len, rid, stream_enc, pack_q(seq), type_enc, key_enc)),
        )
        at = times[i]
        prev = head.last_hash
        pack = (
            layouts.get((stream, event_type, key_id)) or layout(codec, stream, event_type, key_id)
        )[0]
        h = sha256(
            pack(
                leaf_prefix,
                position,
                36,
                rid,
                stream_enc,
                seq,
                type_enc,
                at,
                key_enc,
                len(plaintext),
                12,
                nonce,
                len(ciphertext),
            )
        )
        h.update(ciphertext)
        h.update(hash_len + prev)
        leaf = h.digest()
        rows.append(
            (
                position,
                record_id,
                stream,
                seq,
                event_type,
                at,
                key_id,
                len(plaintext),
                nonce,
                ciphertext,
                prev,
                leaf,
            )
        )
        leaves.append(leaf)
        head.last_seq, head.last_hash, head.last_position = seq, leaf, position
        position += 1
    frontier.extend(leaves, completed)
    return rows


def seal_batch(
    log_id: str,
    events: Sequence[NewEvent],
    frontier: Frontier,
    heads: dict[str, StreamHead],
    cipher_for: Callable[[str], tuple[str, AESGCM]],
    now: datetime | None = None,
) -> Sealed:
    """Seal ``events`` in order as :class:`Record` objects (see :func:`seal_rows`)."""
    rows = seal_rows(FieldCodec(log_id), events, frontier, heads, cipher_for, now)
    return Sealed([Record(*row) for row in rows], heads)


def open_record(log_id: str, record: Record, cipher: AESGCM) -> bytes:
    """Decrypt a record's payload; raises cryptography's InvalidTag if anything was moved."""
    aad = associated_data(
        log_id,
        record.record_id,
        record.stream,
        record.stream_seq,
        record.event_type,
        record.key_id,
    )
    return cipher.decrypt(record.nonce, record.ciphertext, aad)
