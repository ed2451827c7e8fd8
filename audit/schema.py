"""The audit tables (SQLAlchemy Core), portable between SQLite and PostgreSQL.

``audit_records`` holds sealed records in log order; ``audit_data_keys`` the wrapped per-stream
data keys (wrapped key NULL once destroyed); ``audit_stream_heads`` each stream's last
sequence number and hash; ``audit_tree_state`` the single row with the Merkle frontier;
``audit_checkpoints`` every signed tree head (``audit_timestamps``: RFC 3161 tokens of some);
``audit_tree_nodes`` the roots of the perfect subtrees at every fourth level
(``audit.merkle.STRIDE``), so proofs read O(log n) hashes.
Log order is the ``position`` the single writer assigns under a lock, never a database
sequence. Records are found by position or by ticket (``stream``, ``stream_seq``); the
record id is unique.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

records = Table(
    "audit_records",
    metadata,
    # On SQLite an INTEGER primary key is the rowid itself: no second B-tree to insert into.
    Column(
        "position",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("record_id", String(36), nullable=False),
    Column("stream", String(200), nullable=False),
    Column("stream_seq", BigInteger, nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("occurred_at_us", BigInteger, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("payload_size", Integer, nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("prev_hash", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary, nullable=False),
    UniqueConstraint("record_id", name="uq_audit_records_record_id"),
    UniqueConstraint("stream", "stream_seq", name="uq_audit_records_stream_seq"),
)
# One index beyond the keys: (type, time, stream) answers the auditor's "sessions whose
# ticket holds an event of this type" search (broker.evidence.queries.streams_with_event)
# from the index alone, without a scan of every record. It is one more B-tree insert per
# record on the append path (docs/AUDIT.md, "Appends and locking"); nothing else is indexed.
Index(
    "ix_audit_records_type_time", records.c.event_type, records.c.occurred_at_us, records.c.stream
)

data_keys = Table(
    "audit_data_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("stream", String(200), nullable=False),
    Column("kek_id", String(100), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=True),
    Column("created_at_us", BigInteger, nullable=False),
    Column("destroyed_at_us", BigInteger, nullable=True),
)
Index("ix_audit_data_keys_stream", data_keys.c.stream)

stream_heads = Table(
    "audit_stream_heads",
    metadata,
    Column("stream", String(200), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", LargeBinary, nullable=False),
    Column("last_position", BigInteger, nullable=False),
)

tree_state = Table(
    "audit_tree_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
    Column("frontier", LargeBinary, nullable=False),
    Column("root", LargeBinary, nullable=False),
)

tree_nodes = Table(
    "audit_tree_nodes",
    metadata,
    # ``node_key(level, index)``: one integer key, so on SQLite the key is the rowid itself.
    Column(
        "node",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("hash", LargeBinary, nullable=False),
)

NODE_LEVEL_SHIFT = 48  # indexes stay below 2**48 (a log of 2**52 records at level 4)


def node_key(level: int, index: int) -> int:
    """The ``audit_tree_nodes`` key of the perfect subtree (level, index)."""
    return (level << NODE_LEVEL_SHIFT) | index


checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary, nullable=False),
    Column("note", Text, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
)

timestamps = Table(
    "audit_timestamps",
    metadata,
    # The checkpoint's size: one RFC 3161 token per timestamped checkpoint (audit.timestamp).
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("response", LargeBinary, nullable=False),  # the DER TimeStampResp, as received
    Column("gen_time_us", BigInteger, nullable=False),  # the TSA's time, for listing
    Column("created_at_us", BigInteger, nullable=False),
)
