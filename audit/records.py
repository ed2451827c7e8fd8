"""A record's binary form: what its hash covers and what its encryption is bound to.

The leaf data covers the cleartext header **and the ciphertext** (never the plaintext), so
verification needs no keys and destroying a data key leaves every hash intact. The AEAD
associated data binds log id, record id, stream, sequence, event type and key id: a
ciphertext moved to another row, ticket or log no longer decrypts.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from audit.merkle import HASH_SIZE

LEAF_MAGIC = b"sb-audit-record-v1\x00"
AAD_MAGIC = b"sb-audit-aad-v1\x00"
ZERO_HASH = b"\x00" * HASH_SIZE

Layout = tuple[Callable[..., bytes], bytes, bytes, bytes]
"""A leaf's ``struct`` packer up to its ciphertext and its encoded stream, type and key id."""

_Q = struct.Struct(">q")
_I = struct.Struct(">I")


def _s(value: str) -> bytes:
    raw = value.encode("utf-8")
    return _I.pack(len(raw)) + raw


def _b(value: bytes) -> bytes:
    return _I.pack(len(value)) + value


class FieldCodec:
    """A log's constant encoding pieces and a cache of encoded strings, for the hot loops.

    Sealing and verification build :func:`leaf_data` and :func:`associated_data` from these
    pieces inline (the same bytes, checked by tests) instead of calling the functions per
    record: tickets, event types and key ids repeat, so their encodings are computed once.
    """

    __slots__ = ("aad_prefix", "known", "layouts", "leaf_prefix")

    CACHE_SIZE = 4096

    def __init__(self, log_id: str) -> None:
        self.leaf_prefix = b"\x00" + LEAF_MAGIC + _s(log_id)  # with RFC 9162's leaf byte
        self.aad_prefix = AAD_MAGIC + _s(log_id)
        self.known: dict[str, bytes] = {}  # loops call ``known.get(v) or s(v)``
        # (stream, event type, key id) -> leaf layout, see :func:`audit.scan.leaf_layout`
        self.layouts: dict[tuple[str, str, str], Layout] = {}

    def s(self, value: str) -> bytes:
        """``_s(value)``, cached."""
        enc = self.known.get(value)
        if enc is None:
            if len(self.known) >= self.CACHE_SIZE:
                self.known.clear()
            enc = self.known[value] = _s(value)
        return enc


@dataclass(frozen=True, slots=True)
class Record:
    """One sealed record as stored: cleartext header, nonce, ciphertext, chain and leaf hash."""

    position: int
    record_id: str
    stream: str
    stream_seq: int
    event_type: str
    occurred_at_us: int  # microseconds since the Unix epoch, UTC
    key_id: str
    payload_size: int
    nonce: bytes
    ciphertext: bytes
    prev_hash: bytes
    leaf_hash: bytes

    @property
    def occurred_at(self) -> datetime:
        return from_micros(self.occurred_at_us)


def leaf_data(
    log_id: str,
    position: int,
    record_id: str,
    stream: str,
    stream_seq: int,
    event_type: str,
    occurred_at_us: int,
    key_id: str,
    payload_size: int,
    nonce: bytes,
    ciphertext: bytes,
    prev_hash: bytes,
) -> bytes:
    return b"".join(
        (
            LEAF_MAGIC,
            _s(log_id),
            _Q.pack(position),
            _s(record_id),
            _s(stream),
            _Q.pack(stream_seq),
            _s(event_type),
            _Q.pack(occurred_at_us),
            _s(key_id),
            _Q.pack(payload_size),
            _b(nonce),
            _b(ciphertext),
            _b(prev_hash),
        )
    )


def record_leaf_hash(log_id: str, r: Record) -> bytes:
    """Recompute a record's RFC 9162 leaf hash from its fields (ignores ``r.leaf_hash``)."""
    data = leaf_data(
        log_id,
        r.position,
        r.record_id,
        r.stream,
        r.stream_seq,
        r.event_type,
        r.occurred_at_us,
        r.key_id,
        r.payload_size,
        r.nonce,
        r.ciphertext,
        r.prev_hash,
    )
    return hashlib.sha256(b"\x00" + data).digest()


def associated_data(
    log_id: str, record_id: str, stream: str, stream_seq: int, event_type: str, key_id: str
) -> bytes:
    return b"".join(
        (
            AAD_MAGIC,
            _s(log_id),
            _s(record_id),
            _s(stream),
            _Q.pack(stream_seq),
            _s(event_type),
            _s(key_id),
        )
    )


def to_micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    seconds, micros = divmod(value, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
