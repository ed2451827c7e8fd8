"""The store on real databases (SQLite and PostgreSQL): append, read, tamper, erase, rotate,
publish and roll back. Every test runs on both through the ``db_url`` fixture."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from audit import cli, schema
from audit.bundle import verify_bundle
from audit.checkpoint import CheckpointSigner
from audit.errors import AuditError, KeyUnavailable, RollbackDetected, VerificationError
from audit.keys import LocalFileKeyProvider
from audit.merkle import verify_consistency, verify_inclusion
from audit.reader import StreamQuery
from audit.records import to_micros
from audit.store import AuditLog, NewEvent, verify_database

from .conftest import LOG_ID


def ev(stream: str, n: int, kind: str = "session.event") -> list[NewEvent]:
    return [NewEvent(stream, kind, {"n": i, "who": f"tech-{i}"}) for i in range(n)]


async def fill(log: AuditLog, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await log.append(conn, ev("HD-1", 3) + ev("HD-2", 2))
    async with engine.begin() as conn:
        await log.append(conn, ev("HD-1", 2) + ev("HD-3", 1))
    async with engine.begin() as conn:
        assert await log.append(conn, []) == []


async def test_append_read_and_proofs(log: AuditLog, engine: AsyncEngine) -> None:
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    async with engine.begin() as conn:
        assert await log.size(conn) == 0
        assert await log.latest_checkpoint(conn) is None
        first = await log.append(conn, [NewEvent("HD-1", "x", {"a": 1}, occurred_at=at)])
    assert first[0].position == 0
    assert first[0].stream_seq == 1
    await fill(log, engine)
    async with engine.connect() as conn:
        assert await log.size(conn) == 9
        stream = await log.read_stream(conn, "HD-1")
        assert [r.stream_seq for r in stream] == list(range(1, 7))
        assert stream[0].payload == {"a": 1}
        assert stream[0].occurred_at == at
        assert stream[1].payload == {"n": 0, "who": "tech-0"}
        assert not stream[1].erased
        records = await log.records(conn, after=3, limit=4)
        assert [r.position for r in records] == [4, 5, 6, 7]
        checkpoint = await log.latest_checkpoint(conn)
        assert checkpoint is not None
        assert checkpoint.size == 9
        log.signer.verifier.verify(checkpoint.note)
        leaves = await log.leaf_hashes(conn, 9)
        for position in (0, 5, 8):
            proof = await log.inclusion_proof(conn, position, 9)
            verify_inclusion(leaves[position], position, 9, proof, checkpoint.root)
        cps = {
            int(s): bytes(r)
            for s, r in await conn.execute(
                select(schema.checkpoints.c.size, schema.checkpoints.c.root)
            )
        }
        assert sorted(cps) == [1, 6, 9]
        verify_consistency(6, 9, cps[6], cps[9], await log.consistency_proof(conn, 6, 9))
        seen: list[tuple[int, int]] = []
        report = await log.verify_log(conn, lambda d, t: seen.append((d, t)))
        assert report.ok, report.problem
        assert seen == [(9, 9)]
        small = await verify_database(conn, log.signer.verifier, batch=5)
        assert small.ok
        assert small.size == 9


async def test_many_streams_and_cache(log: AuditLog, engine: AsyncEngine) -> None:
    log.keyring.ciphers.update({str(i): log.keyring.ciphers.get("x") for i in range(9_990)})  # type: ignore[misc]
    async with engine.begin() as conn:
        await log.append(conn, [NewEvent(f"T-{i}", "e", {"i": i}) for i in range(50)])
    assert len(log.keyring.ciphers) == 40  # cleared at 10,000, then 40 more
    fresh = AuditLog(log_id=LOG_ID, keys=log.keys, signer=log.signer)
    async with engine.connect() as conn:
        assert (await fresh.read_stream(conn, "T-7"))[0].payload == {"i": 7}
        assert (await fresh.verify_log(conn)).ok


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("event_type", "forged.type", "was altered"),
        ("ciphertext", b"\x00" * 40, "was altered"),
        ("occurred_at_us", 1, "was altered"),
        ("stream_seq", 9, "was altered"),
    ],
)
async def test_sql_update_names_first_bad_record(
    log: AuditLog, engine: AsyncEngine, column: str, value: object, message: str
) -> None:
    await fill(log, engine)
    async with engine.begin() as conn:
        target = (await log.records(conn))[4]
        await conn.execute(
            update(schema.records).where(schema.records.c.position == 4).values({column: value})
        )
    async with engine.connect() as conn:
        report = await log.verify_log(conn)
    assert not report.ok
    assert message in (report.problem or "")
    assert (report.position, report.record_id) == (4, target.record_id)
    assert f"position 4, id {target.record_id}" in report.verdict()


async def test_sql_delete_and_moved_ciphertext(log: AuditLog, engine: AsyncEngine) -> None:
    await fill(log, engine)
    async with engine.begin() as conn:
        records = await log.records(conn)
        await conn.execute(delete(schema.records).where(schema.records.c.position == 2))
    async with engine.connect() as conn:
        report = await log.verify_log(conn)
    assert not report.ok
    assert report.position == 3
    assert report.record_id == records[3].record_id
    assert "missing" in (report.problem or "")
    # A ciphertext moved to another row of the same ticket does not decrypt (AAD binding).
    async with engine.begin() as conn:
        await conn.execute(
            update(schema.records)
            .where(schema.records.c.position == 1)
            .values(nonce=records[0].nonce, ciphertext=records[0].ciphertext)
        )
    async with engine.connect() as conn:
        with pytest.raises(VerificationError, match="does not decrypt") as info:
            await log.read_stream(conn, "HD-1")
    assert info.value.position == 1


async def test_sql_delete_of_tail_and_its_checkpoint(log: AuditLog, engine: AsyncEngine) -> None:
    await fill(log, engine)
    async with engine.begin() as conn:
        await conn.execute(delete(schema.records).where(schema.records.c.position >= 6))
        await conn.execute(delete(schema.checkpoints).where(schema.checkpoints.c.size > 6))
    async with engine.connect() as conn:
        report = await log.verify_log(conn)
    assert not report.ok  # the tail is cut with its checkpoints: the stored tree disagrees
    assert "stored tree state (size 8)" in (report.problem or "")
    async with engine.begin() as conn:
        await conn.execute(delete(schema.records).where(schema.records.c.position >= 5))
    async with engine.connect() as conn:
        report = await log.verify_log(conn)
    assert not report.ok
    assert "stored tree state" in (report.problem or "")
    async with engine.begin() as conn:
        await conn.execute(delete(schema.records).where(schema.records.c.position >= 3))
    async with engine.connect() as conn:
        report = await log.verify_log(conn)
    assert not report.ok
    assert "truncated" in (report.problem or "")


async def test_erase_stream(log: AuditLog, engine: AsyncEngine, tmp_path: Path) -> None:
    await fill(log, engine)
    async with engine.begin() as conn:
        erased = await log.erase_stream(
            conn, "HD-1", actor={"user": "admin"}, details={"dropped_comments": 2}
        )
        with pytest.raises(AuditError, match="no live data key"):
            await log.erase_stream(conn, "HD-404", actor={"user": "admin"})
        with pytest.raises(AuditError, match="outside that stream"):
            await log.erase_stream(conn, "HD-2", actor={}, record_in="HD-2")
    assert erased.marker.stream_seq == 6
    assert (erased.record.stream, erased.record.position) == ("_system", erased.marker.position + 1)
    fresh = AuditLog(log_id=LOG_ID, keys=log.keys, signer=log.signer)
    async with engine.connect() as conn:
        for reader in (log, fresh):
            stream = await reader.read_stream(conn, "HD-1")
            assert all(r.payload is None and r.erased for r in stream[:5])
            assert stream[5].event_type == "ticket.erased"
            assert not stream[5].erased
            assert stream[5].payload is not None
            assert stream[5].payload["actor"] == {"user": "admin"}
            assert stream[5].payload["dropped_comments"] == 2
            assert (await reader.read_stream(conn, "HD-2"))[1].payload == {"n": 1, "who": "tech-1"}
        assert (await log.verify_log(conn)).ok
        bundle = await log.export_bundle(conn, "HD-1", include_plaintext=True)
    report = verify_bundle(bundle, log.signer.verifier)
    assert report.ok, report.problem
    assert "1 decrypted payloads" in report.verdict()
    assert "ERASED: the ticket's content was erased at " in report.verdict()
    assert "the payloads of the 5 records sealed before it" in report.verdict()
    async with engine.begin() as conn:  # the ticket goes on under its new key
        await log.append(conn, ev("HD-1", 1))
    async with engine.connect() as conn:
        assert (await log.read_stream(conn, "HD-1"))[-1].payload == {"n": 0, "who": "tech-0"}


async def test_a_second_erasure_cannot_shred_the_first_ones_record(
    log: AuditLog, engine: AsyncEngine
) -> None:
    await fill(log, engine)
    async with engine.begin() as conn:
        first = await log.erase_stream(conn, "HD-1", actor={"user": "admin", "reason": "gdpr 1"})
    async with engine.begin() as conn:  # nothing sealed since: refused, nothing destroyed
        with pytest.raises(AuditError, match="nothing was sealed for it since"):
            await log.erase_stream(conn, "HD-1", actor={"user": "mallory"})
    async with engine.begin() as conn:  # a new session on the erased ticket: erasable again
        await log.append(conn, ev("HD-1", 1))
    async with engine.begin() as conn:
        second = await log.erase_stream(conn, "HD-1", actor={"user": "admin", "reason": "2"})
    async with engine.connect() as conn:
        ticket = await log.read_stream(conn, "HD-1")
        system = await log.read_stream(conn, "_system")
        assert (await log.verify_log(conn)).ok
    assert ticket[first.marker.stream_seq - 1].erased  # its copy in the ticket's chain: gone
    records = [r for r in system if r.event_type == "ticket.erased"]
    assert [r.position for r in records] == [first.record.position, second.record.position]
    assert records[0].payload is not None
    assert records[0].payload["actor"]["reason"] == "gdpr 1"
    assert records[0].payload["stream"] == "HD-1"


async def test_kek_rotation_and_wrong_key(
    log: AuditLog, engine: AsyncEngine, keys: LocalFileKeyProvider, tmp_path: Path
) -> None:
    await fill(log, engine)
    before = await _snapshot(engine)
    new_kek = keys.rotate()
    async with engine.begin() as conn:
        assert await log.rotate_kek(conn, keys) == 3
        kek_ids = set((await conn.execute(select(schema.data_keys.c.kek_id))).scalars())
    assert kek_ids == {new_kek}
    assert await _snapshot(engine) == before  # records untouched
    keys.retire("kek-1")
    reopened = AuditLog(log_id=LOG_ID, keys=LocalFileKeyProvider(keys.path), signer=log.signer)
    async with engine.connect() as conn:
        assert (await reopened.read_stream(conn, "HD-3"))[0].payload == {"n": 0, "who": "tech-0"}
        assert (await reopened.verify_log(conn)).ok
    # Another installation's key file: nothing unwraps.
    stranger = AuditLog(
        log_id=LOG_ID, keys=LocalFileKeyProvider(tmp_path / "other-kek.json"), signer=log.signer
    )
    async with engine.connect() as conn:
        with pytest.raises(KeyUnavailable):
            await stranger.read_stream(conn, "HD-1")
        with pytest.raises(KeyUnavailable):
            await stranger.data_keys_for(conn, {r.key_id for r in await log.records(conn)})
        with pytest.raises(KeyUnavailable):
            await stranger.export_bundle(conn, "HD-1", include_plaintext=True)
    async with engine.begin() as conn:
        with pytest.raises(KeyUnavailable):
            await stranger.append(conn, ev("HD-1", 1))


async def _snapshot(engine: AsyncEngine) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(schema.records).order_by(schema.records.c.position))
        return [tuple(r) for r in rows]


async def test_publication_and_rollback(log: AuditLog, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await log.append(conn, ev("HD-1", 3))
    async with engine.connect() as conn:
        old_state = (await conn.execute(select(schema.tree_state))).one()
        assert (await log.check_published(conn)).ok  # nothing published yet
    await fill(log, engine)
    async with engine.connect() as conn:
        published = await log.publish(conn)
        assert published is not None
        assert published.size == 11
        assert (await log.check_published(conn)).ok
    # Delete the tail records only.
    async with engine.begin() as conn:
        await conn.execute(delete(schema.records).where(schema.records.c.position >= 10))
    async with engine.connect() as conn:
        with pytest.raises(RollbackDetected, match="rolled back"):
            await log.check_published(conn)
    # Restore an older, self-consistent state (as an old backup would be).
    async with engine.begin() as conn:
        await conn.execute(delete(schema.records).where(schema.records.c.position >= 3))
        await conn.execute(delete(schema.checkpoints).where(schema.checkpoints.c.size > 3))
        await conn.execute(delete(schema.stream_heads))
        await conn.execute(
            update(schema.tree_state).values(
                size=old_state.size, frontier=old_state.frontier, root=old_state.root
            )
        )
    async with engine.connect() as conn:
        assert (await log.verify_log(conn)).ok  # consistent on its own ...
        with pytest.raises(RollbackDetected, match="rolled back") as info:
            await log.check_published(conn)  # ... but behind what was published
    assert isinstance(info.value, AuditError)
    unpublished = AuditLog(log_id=LOG_ID, keys=log.keys, signer=log.signer)
    async with engine.connect() as conn:
        assert (await unpublished.check_published(conn)).ok
        assert (await unpublished.publish(conn)) is not None


async def test_published_by_another_key_is_a_failure_not_a_rollback(
    log: AuditLog, engine: AsyncEngine, tmp_path: Path
) -> None:
    await fill(log, engine)
    intruder = CheckpointSigner.generate(LOG_ID)
    assert log.publisher is not None
    log.publisher.publish(intruder.sign(100, b"\x01" * 32))
    async with engine.connect() as conn:
        report = await log.check_published(conn)
    assert not report.ok
    assert not report.rolled_back
    assert "not signed by" in (report.problem or "")


async def test_cli_verify_log(
    log: AuditLog,
    engine: AsyncEngine,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await fill(log, engine)
    key = tmp_path / "public.vkey"
    key.write_text(log.signer.verifier.encode() + "\n")
    code = await asyncio.to_thread(
        cli.main, ["verify-log", "--database-url", db_url, "--public-key", str(key)]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert out.startswith("OK: 8 records in 3 streams")
    assert "8/8 records" in err
    assert "#" * 30 in err
    async with engine.begin() as conn:
        await conn.execute(
            update(schema.records).where(schema.records.c.position == 0).values(event_type="x")
        )
    code = await asyncio.to_thread(
        cli.main, ["verify-log", "--database-url", db_url, "--public-key", str(key)]
    )
    out, _ = capsys.readouterr()
    assert code == 1
    assert out.startswith("FAILED:")
    assert "position 0" in out


def test_log_id_must_be_the_origin(keys: LocalFileKeyProvider) -> None:
    with pytest.raises(AuditError, match="must be the signer's origin"):
        AuditLog(log_id="other", keys=keys, signer=CheckpointSigner.generate(LOG_ID))


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        to_micros(datetime(2026, 1, 1))


async def test_empty_database_verifies(log: AuditLog, engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        report = await log.verify_log(conn)
        assert report.ok
        assert report.size == 0
        assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1


async def test_search_stream_pages_newest_first_by_type_and_time(
    log: AuditLog, engine: AsyncEngine
) -> None:
    """One stream's page, newest first, filtered by event type and a time range; whether
    more follow is told without counting the stream."""
    early = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    late = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    async with engine.begin() as conn:
        await log.append(
            conn,
            [
                NewEvent("_system", "auth.login_failed", {"n": 1}, occurred_at=early),
                NewEvent("_system", "auth.lockout", {"n": 2}, occurred_at=early),
                NewEvent("_system", "auth.login_failed", {"n": 3}, occurred_at=late),
                NewEvent("HD-1", "auth.login_failed", {"n": 4}, occurred_at=late),
            ],
        )
    async with engine.connect() as conn:
        page, more = await log.search_stream(conn, StreamQuery("_system", limit=2))
        assert [r.payload for r in page] == [{"n": 3}, {"n": 2}]
        assert more
        rest, more = await log.search_stream(conn, StreamQuery("_system", limit=2, offset=2))
        assert [r.payload for r in rest] == [{"n": 1}]
        assert not more
        typed, _ = await log.search_stream(
            conn, StreamQuery("_system", event_types=("auth.login_failed",))
        )
        assert [r.payload for r in typed] == [{"n": 3}, {"n": 1}]
        ranged, _ = await log.search_stream(
            conn, StreamQuery("_system", since=late, until=datetime(2026, 3, 3, tzinfo=UTC))
        )
        assert [r.payload for r in ranged] == [{"n": 3}]
        before, _ = await log.search_stream(conn, StreamQuery("_system", until=late))
        assert [r.payload for r in before] == [{"n": 2}, {"n": 1}]
