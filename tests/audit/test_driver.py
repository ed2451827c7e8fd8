"""The append's statements per driver: the aiosqlite/asyncpg paths and the portable
SQLAlchemy Core path write the same log (on SQLite and PostgreSQL), and the hot-loop
encodings are byte for byte the reference ``leaf_data``/``associated_data``."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from audit import schema
from audit.appender import append_batch, sign_checkpoint
from audit.driver import AsyncpgOps, PortableOps, SqliteOps, ops_for
from audit.merkle import Frontier
from audit.records import FieldCodec, associated_data, record_leaf_hash
from audit.sealing import NewEvent, StreamHead, new_record_ids, open_record, seal_batch
from audit.store import AuditLog
from audit.verify import LogVerifier

from .conftest import LOG_ID


def ev(stream: str, n: int) -> list[NewEvent]:
    return [NewEvent(stream, "e", {"i": i, "who": "t"}) for i in range(n)]


async def test_portable_and_driver_paths_write_one_log(log: AuditLog, engine: AsyncEngine) -> None:
    kw = {"codec": FieldCodec(LOG_ID), "keyring": log.keyring, "signer": log.signer}
    async with engine.begin() as conn:
        ops = await ops_for(conn)
        assert isinstance(ops, SqliteOps if conn.dialect.name == "sqlite" else AsyncpgOps)
        assert isinstance(await ops_for(conn, portable=True), PortableOps)
        first = await append_batch(conn, ev("HD-1", 3) + ev("HD-2", 1), portable=True, **kw)
    async with engine.begin() as conn:  # old heads (update) and a new stream (insert)
        second = await append_batch(conn, ev("HD-1", 2) + ev("HD-3", 2), portable=True, **kw)
    async with engine.begin() as conn:  # the driver path continues the same tree and chains
        third = await log.append(conn, ev("HD-2", 2) + ev("HD-3", 1))
    async with engine.begin() as conn:  # known streams only: updates, no inserts
        fourth = await append_batch(conn, ev("HD-1", 1), portable=True, **kw)
    assert [a.position for a in first + second + third + fourth] == list(range(12))
    assert [a.stream_seq for a in second] == [4, 5, 1, 2]
    async with engine.connect() as conn:
        assert (await log.verify_log(conn)).ok
        assert [r.payload for r in await log.read_stream(conn, "HD-1")][3:] == [
            {"i": 0, "who": "t"},
            {"i": 1, "who": "t"},
            {"i": 0, "who": "t"},
        ]
        sh = schema.stream_heads
        heads = dict(list(await conn.execute(select(sh.c.stream, sh.c.last_seq))))
        assert heads == {"HD-1": 6, "HD-2": 3, "HD-3": 3}
        keys = (await conn.execute(select(func.count()).select_from(schema.data_keys))).scalar_one()
        assert keys == 3  # one data key per ticket, whichever path created it


async def test_portable_path_stores_subtrees_and_signs_on_a_cadence(
    log: AuditLog, engine: AsyncEngine
) -> None:
    kw = {"codec": FieldCodec(LOG_ID), "keyring": log.keyring, "signer": log.signer}
    async with engine.begin() as conn:
        await append_batch(conn, ev("HD-1", 20), portable=True, sign=False, **kw)
        assert await log.uncovered(conn) == 20
        signed = await sign_checkpoint(conn, log.signer, portable=True)
        assert signed is not None
        assert signed.size == 20
        assert await sign_checkpoint(conn, log.signer, portable=True) is None
        assert await log.uncovered(conn) == 0
        nodes = (await conn.execute(select(func.count()).select_from(schema.tree_nodes))).scalar()
    assert nodes == 1  # leaves 0-15 at level 4
    async with engine.connect() as conn:
        assert (await log.verify_log(conn)).ok
        proof = await log.inclusion_proof(conn, 3, 20)
        assert len(proof) == 5


async def test_empty_batch_writes_nothing(log: AuditLog, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        assert (
            await append_batch(
                conn,
                [],
                codec=FieldCodec(LOG_ID),
                keyring=log.keyring,
                signer=log.signer,
                portable=True,
            )
            == []
        )
        assert await log.size(conn) == 0


def test_inline_encodings_are_the_reference_ones() -> None:
    cipher = AESGCM(AESGCM.generate_key(256))
    frontier, heads = Frontier(), dict[str, StreamHead]()
    at = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    events = [
        NewEvent("HD-\u00e9\U0001f600", "t\u00fcp", {"k": "v\u2603"}, occurred_at=at),
        NewEvent("HD-2", "x" * 100, {"n": 2**53 - 1}),
        NewEvent("s" * 200, "y", {}),
    ]
    sealed = seal_batch(LOG_ID, events, frontier, heads, lambda s: ("key-" + s[:3], cipher))
    for r in sealed.records:
        assert record_leaf_hash(LOG_ID, r) == r.leaf_hash
        aad = associated_data(LOG_ID, r.record_id, r.stream, r.stream_seq, r.event_type, r.key_id)
        assert cipher.decrypt(r.nonce, r.ciphertext, aad) == open_record(LOG_ID, r, cipher)
    assert sealed.records[0].occurred_at == at
    checker = LogVerifier(LOG_ID, None, {})  # type: ignore[arg-type]
    checker.feed_rows([tuple(getattr(r, f) for f in r.__slots__) for r in sealed.records])
    assert checker.frontier.root() == frontier.root()


def test_record_ids_are_uuid7_in_time_order() -> None:
    ids = new_record_ids(1000, 0x0123_4567_89AB)
    assert len(set(ids)) == 1000
    for rid in ids:
        assert len(rid) == 36
        assert rid[:13] == "01234567-89ab"
        assert rid[14] == "7"
        assert rid[19] in "89ab"
        assert all(c in "0123456789abcdef-" for c in rid)
    later = new_record_ids(1, 0x0123_4567_89AC)[0]
    assert later > max(ids)


def test_codec_cache_is_bounded() -> None:
    codec = FieldCodec(LOG_ID)
    values = [os.urandom(4).hex() for _ in range(FieldCodec.CACHE_SIZE + 1)]
    for v in values:
        assert codec.s(v) == len(v).to_bytes(4, "big") + v.encode()
    assert len(codec.known) == 1  # cleared when full, then the last one
    assert codec.s(values[-1]) is codec.known[values[-1]]
