"""``verify_database(..., processes=N)``: worker processes read their own segments from the
database (SQLite and PostgreSQL) and the report is the one a single pass gives, field for
field, on an untouched log and after tampering by hand: a record changed, deleted or re-hashed
to break its ticket's chain at a segment's first record, the stored tree state or a checkpoint
changed, the tail rolled back behind a published checkpoint.

The log has 45 records in 7 append batches over 4 tickets; segments of 8 records put a
segment boundary inside batches and in the middle of every ticket's chain.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from audit import cli, rowsource, schema
from audit.checkpoint import SignedCheckpoint
from audit.dbverify import fetch_segment, read_rows, verify_database, worker_fetch, worker_url
from audit.errors import VerificationError
from audit.records import Record, record_leaf_hash
from audit.segments import feed_segments
from audit.store import AuditLog, NewEvent, row_to_record
from audit.verify import LogVerifier, VerifyReport

from .conftest import LOG_ID

BATCHES = (5, 7, 3, 9, 6, 8, 7)  # checkpoints at 5, 12, 15, 24, 30, 38, 45
TOTAL = sum(BATCHES)
SEGMENT = 8
FIELDS = [f.name for f in dataclasses.fields(Record)]

Tamper = Callable[[AsyncConnection, list[Record]], Awaitable[None]]


async def fill(log: AuditLog, engine: AsyncEngine) -> None:
    n = 0
    for size in BATCHES:
        events = [NewEvent(f"HD-{(n + i) % 4}", "session.event", {"n": n + i}) for i in range(size)]
        async with engine.begin() as conn:
            await log.append(conn, events)
        n += size


async def both(
    log: AuditLog, engine: AsyncEngine, published: SignedCheckpoint | None = None
) -> VerifyReport:
    """The one-process report, after checking the worker processes give the same."""
    async with engine.connect() as conn:
        one = await verify_database(conn, log.signer.verifier, published=published)
    async with engine.connect() as conn:
        many = await verify_database(
            conn, log.signer.verifier, published=published, processes=2, segment=SEGMENT
        )
    assert many == one
    return one


async def records(engine: AsyncEngine) -> list[Record]:
    async with engine.connect() as conn:
        return [row_to_record(r) for r in await read_rows(conn, 0, TOTAL, portable=True)]


async def set_record(conn: AsyncConnection, position: int, **values: object) -> None:
    await conn.execute(
        update(schema.records).where(schema.records.c.position == position).values(values)
    )


def forged(record: Record, **changes: object) -> dict[str, object]:
    """``changes`` with the leaf hash a forger would recompute for them."""
    new = dataclasses.replace(record, **changes)  # type: ignore[arg-type]
    return {**changes, "leaf_hash": record_leaf_hash(LOG_ID, new)}


async def test_untouched_log_and_progress(log: AuditLog, engine: AsyncEngine) -> None:
    await fill(log, engine)
    report = await both(log, engine)
    assert report.ok
    assert (report.size, report.streams, report.checkpoint_size) == (TOTAL, 4, TOTAL)
    seen: list[tuple[int, int]] = []
    async with engine.connect() as conn:
        again = await verify_database(
            conn,
            log.signer.verifier,
            progress=lambda d, t: seen.append((d, t)),
            processes=3,
            segment=SEGMENT,
        )
    assert again == report
    assert seen == [(d, TOTAL) for d in (8, 16, 24, 32, 40, 45)]


async def _modified(conn: AsyncConnection, recs: list[Record]) -> None:
    await set_record(conn, 19, event_type="forged.type")


async def _deleted(conn: AsyncConnection, recs: list[Record]) -> None:
    await conn.execute(delete(schema.records).where(schema.records.c.position == 10))


async def _unlinked_at_boundary(conn: AsyncConnection, recs: list[Record]) -> None:
    # Position 16 opens a segment: its ticket link is checked by the parent, not the worker.
    await set_record(conn, 16, **forged(recs[16], prev_hash=bytes(32)))


async def _resequenced_at_boundary(conn: AsyncConnection, recs: list[Record]) -> None:
    await set_record(conn, 32, **forged(recs[32], stream_seq=recs[32].stream_seq + 100))


async def _ticket_moved_at_boundary(conn: AsyncConnection, recs: list[Record]) -> None:
    # A segment's first record claims to start a new ticket: the chain of HD-0 breaks.
    await set_record(conn, 24, **forged(recs[24], stream="HD-9", stream_seq=1, prev_hash=bytes(32)))


async def _last_record(conn: AsyncConnection, recs: list[Record]) -> None:
    await set_record(conn, TOTAL - 1, ciphertext=b"\x00" * 40)


async def _inserted_at_end(conn: AsyncConnection, recs: list[Record]) -> None:
    row = {f: getattr(recs[-1], f) for f in FIELDS}
    values = {**row, "position": TOTAL, "record_id": "0" * 36, "stream_seq": 99}
    await conn.execute(schema.records.insert().values(values))


async def _tree_root(conn: AsyncConnection, recs: list[Record]) -> None:
    await conn.execute(update(schema.tree_state).values(root=bytes(32)))


async def _tree_size(conn: AsyncConnection, recs: list[Record]) -> None:
    await conn.execute(update(schema.tree_state).values(size=TOTAL - 1))


async def _checkpoint_replayed(conn: AsyncConnection, recs: list[Record]) -> None:
    cp = schema.checkpoints
    old = (await conn.execute(select(cp.c.note).where(cp.c.size == 15))).scalar_one()
    await conn.execute(update(cp).where(cp.c.size == 24).values(note=old))


async def _checkpoint_garbled(conn: AsyncConnection, recs: list[Record]) -> None:
    cp = schema.checkpoints
    await conn.execute(update(cp).where(cp.c.size == 30).values(note="garbage\n"))


async def _tail_and_checkpoints_cut(conn: AsyncConnection, recs: list[Record]) -> None:
    await conn.execute(delete(schema.records).where(schema.records.c.position >= 38))
    await conn.execute(delete(schema.checkpoints).where(schema.checkpoints.c.size > 38))
    await conn.execute(update(schema.tree_state).values(size=38))


@pytest.mark.parametrize(
    ("tamper", "problem", "position"),
    [
        (_modified, "was altered", 19),
        (_deleted, "missing", 11),
        (_unlinked_at_boundary, "does not link", 16),
        (_resequenced_at_boundary, "sequence", 32),
        (_ticket_moved_at_boundary, "sequence", 28),
        (_last_record, "was altered", TOTAL - 1),
        (_inserted_at_end, "was altered", TOTAL),
        (_tree_root, "stored tree state", None),
        (_tree_size, "stored tree state", None),
        (_checkpoint_replayed, "signed checkpoint at size 24 does not match", 23),
        (_checkpoint_garbled, "checkpoint at size 30", 29),
        (_tail_and_checkpoints_cut, "stored tree state", None),
    ],
)
async def test_tampering_gets_the_one_pass_report(
    log: AuditLog, engine: AsyncEngine, tamper: Tamper, problem: str, position: int | None
) -> None:
    await fill(log, engine)
    recs = await records(engine)
    async with engine.begin() as conn:
        await tamper(conn, recs)
    report = await both(log, engine)
    assert not report.ok
    assert problem in (report.problem or "")
    assert report.position == position
    if position is not None and position < TOTAL:
        assert report.record_id == recs[position].record_id


@pytest.mark.slow  # half a minute of worker processes on two cores
async def test_rollback_behind_a_published_checkpoint(log: AuditLog, engine: AsyncEngine) -> None:
    await fill(log, engine)
    async with engine.connect() as conn:
        published = await log.latest_checkpoint(conn)
    cp = schema.checkpoints
    async with engine.begin() as conn:  # an old backup: records, checkpoints, tree at 38
        await _tail_and_checkpoints_cut(conn, [])
        root = (await conn.execute(select(cp.c.root).where(cp.c.size == 38))).scalar_one()
        await conn.execute(update(schema.tree_state).values(root=root))
    assert (await both(log, engine)).ok  # consistent on its own ...
    report = await both(log, engine, published)  # ... but behind what was published
    assert report.rolled_back
    assert "rolled back" in (report.problem or "")
    # A published head inside the log is checked at its size, in a segment's middle.
    async with engine.connect() as conn:
        note = (await conn.execute(select(cp.c.note).where(cp.c.size == 30))).scalar_one()
    mid = SignedCheckpoint(log.signer.verifier.verify(note), note)
    assert (await both(log, engine, mid)).ok


Reader = Callable[..., Iterator[Sequence[Any]]]


async def readers(engine: AsyncEngine, db_url: str) -> dict[str, Reader]:
    """The two ways a worker reads: the driver alone (what ``worker_fetch`` gives for
    aiosqlite and asyncpg) and its own SQLAlchemy engine (any other driver)."""
    async with engine.connect() as conn:
        url = worker_url(conn)
        direct = worker_fetch(conn)
    assert url is not None
    assert isinstance(direct, partial)
    assert direct.func is rowsource.fetch_segment
    source = direct.args[0]
    assert source.driver == ("asyncpg" if db_url.startswith("postgresql") else "sqlite3")
    return {
        "driver": partial(rowsource.fetch_segment, source),
        "sqlalchemy": partial(fetch_segment, url),
    }


async def test_workers_read_by_position_and_stop_at_the_end(
    log: AuditLog, engine: AsyncEngine, db_url: str
) -> None:
    await fill(log, engine)
    recs = await records(engine)
    ways = await readers(engine, db_url)
    read: dict[str, list[tuple[Any, ...]]] = {}
    for name, reader in ways.items():

        def fetch(start: int, count: int, reader: Reader = reader) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in reader(start, count, page=3)]

        assert [r[0] for r in await asyncio.to_thread(fetch, 40, 4)] == [40, 41, 42, 43], name
        assert [r[0] for r in await asyncio.to_thread(fetch, 40, 100)] == list(range(40, TOTAL))
        read[name] = await asyncio.to_thread(fetch, 0, TOTAL)
        assert [r[1] for r in read[name]] == [r.record_id for r in recs]
    assert read["driver"] == read["sqlalchemy"]  # the same values, field for field

    async def in_this_process(
        reader: Reader, total: int, page: int = 8_192
    ) -> tuple[str, int | None, int]:
        async with engine.connect() as conn:
            cps = await conn.execute(select(schema.checkpoints.c.size, schema.checkpoints.c.note))
            checker = LogVerifier(LOG_ID, log.signer.verifier, {int(s): n for s, n in cps})
        get = partial(reader, page=page)
        try:
            await asyncio.to_thread(feed_segments, checker, total, get, segment=SEGMENT)
        except VerificationError as exc:
            return (str(exc), exc.position, checker.verified)
        return ("ok", None, checker.verified)

    for reader in ways.values():
        assert await in_this_process(reader, TOTAL, page=5) == ("ok", None, TOTAL)
        # Fewer rows than counted (the log shrank under the verifier): named, never joined.
        found = await in_this_process(reader, TOTAL + 3)
        assert found[1:] == (TOTAL, TOTAL)
        assert "changed while it was verified" in found[0]
    async with engine.begin() as conn:  # a worker stops at the first bad row of a page
        await set_record(conn, 2, event_type="x")
    for reader in ways.values():
        found = await in_this_process(reader, TOTAL, page=2)
        assert found[1:] == (2, 2)


async def test_other_drivers_read_through_sqlalchemy_in_the_workers(
    log: AuditLog, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill(log, engine)
    async with engine.connect() as conn:
        url = worker_url(conn)
        one = await verify_database(conn, log.signer.verifier)
        # A driver the workers cannot use directly (the parent reads through SQLAlchemy Core)
        monkeypatch.setattr(conn.dialect, "driver", "another")
        fetch = worker_fetch(conn)
        assert isinstance(fetch, partial)
        assert (fetch.func, fetch.args) == (fetch_segment, (url,))
        many = await verify_database(conn, log.signer.verifier, processes=2, segment=SEGMENT)
    assert many == one
    assert many.ok


def test_worker_reader_columns_and_drivers() -> None:
    assert tuple(c.name for c in schema.records.columns) == rowsource.COLUMNS
    with pytest.raises(ValueError, match="no worker reader for the driver 'odbc'"):
        rowsource.fetch_segment(rowsource.Source("odbc"), 0, 1)


async def test_bad_process_counts_and_small_logs(log: AuditLog, engine: AsyncEngine) -> None:
    await fill(log, engine)
    async with engine.connect() as conn:
        with pytest.raises(ValueError, match="at least 1"):
            await verify_database(conn, log.signer.verifier, processes=0)
        # A log of one segment is verified here, whatever the processes asked for.
        small = await verify_database(conn, log.signer.verifier, processes=4, segment=64)
        assert small.ok
        assert small.size == TOTAL


async def test_in_memory_sqlite_is_verified_in_one_process(log: AuditLog) -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        async with engine.connect() as conn:
            await conn.run_sync(schema.metadata.create_all)
            await log.append(conn, [NewEvent("HD-1", "e", {"i": i}) for i in range(20)])
            assert worker_url(conn) is None
            assert worker_fetch(conn) is None
            report = await verify_database(conn, log.signer.verifier, processes=2, segment=4)
            assert report.ok
            assert report.size == 20
            portable = await read_rows(conn, 18, 5, portable=True)
            assert [r[0] for r in portable] == [18, 19]
    finally:
        await engine.dispose()


async def test_cli_processes(
    log: AuditLog,
    engine: AsyncEngine,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(verify_database.__kwdefaults__, "segment", SEGMENT)  # 6 segments
    await fill(log, engine)
    key = tmp_path / "public.vkey"
    key.write_text(log.signer.verifier.encode() + "\n")
    argv = ["verify-log", "--database-url", db_url, "--public-key", str(key)]
    outputs = []
    for extra in ([], ["--processes", "2"]):
        code = await asyncio.to_thread(cli.main, [*argv, *extra])
        out, err = capsys.readouterr()
        assert code == 0
        assert f"{TOTAL}/{TOTAL} records" in err
        assert (f"8/{TOTAL} records" in err) == bool(extra)  # a bar step per segment
        outputs.append(out)
    assert outputs[0] == outputs[1]
    assert outputs[0].startswith(f"OK: {TOTAL} records in 4 streams")


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "must be at least 1, not 0"), ("-3", "not -3"), ("two", "whole number, not 'two'")],
)
def test_cli_refuses_bad_process_counts(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["verify-log", "--database-url", "x", "--public-key", "k", "--processes", value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --processes" in err
    assert message in err
