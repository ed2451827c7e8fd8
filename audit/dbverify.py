"""Verifying a whole log stored in a database, with only the log's public key.

One process reads pages of rows and feeds them to :meth:`LogVerifier.feed_rows`. With
``processes > 1`` (and a log of more than one segment) the rows are verified in worker
processes instead (:func:`audit.segments.feed_segments`): each worker connects to the
database itself, through the driver alone where it is aiosqlite or asyncpg
(:mod:`audit.rowsource`), and reads only its own segment, by log position, so the parent
never holds more than the verifier's state. Both ways give the same report.

Rows are read straight from the driver where it is aiosqlite or asyncpg: SQLAlchemy's
``Row`` objects cost about a microsecond per record, a third of the verification itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from functools import partial
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from audit import rowsource, schema
from audit.checkpoint import SignedCheckpoint, VerifierKey
from audit.errors import RollbackDetected, VerificationError
from audit.rowsource import PAGE_ASYNCPG, PAGE_SQLITE, Source
from audit.segments import DEFAULT_SEGMENT, Fetch, feed_segments
from audit.verify import LogVerifier, VerifyReport

WORKER_PAGE = rowsource.PAGE
_COLUMNS = tuple(schema.records.columns)  # in ``Record`` field order
_WORKER_DRIVERS = {"aiosqlite": "sqlite3", "asyncpg": "asyncpg"}
_DIALECT_ONLY = ("async_fallback", "prepared_statement_cache_size", "prepared_statement_name_func")
"""Connect arguments SQLAlchemy's asyncpg dialect takes for itself, not for the driver."""
DEFAULT_CONTEXT = "spawn"
"""Start method of the workers: the parent runs an event loop and holds driver threads and
connections, which a forked child would inherit half-alive. A spawned worker imports no
SQLAlchemy (:mod:`audit.rowsource`): its start costs about 0.15 s of CPU."""


async def read_rows(
    conn: AsyncConnection, start: int, count: int, *, portable: bool = False
) -> Sequence[Sequence[Any]]:
    """The ``count`` records of smallest position ``>= start`` as rows in ``Record`` field
    order, in the caller's transaction (``portable`` forces SQLAlchemy Core)."""
    driver = conn.dialect.driver
    if portable or driver not in ("aiosqlite", "asyncpg"):
        stmt = (
            select(*_COLUMNS)
            .where(schema.records.c.position >= start)
            .order_by(schema.records.c.position)
            .limit(count)
        )
        return (await conn.execute(stmt)).all()
    raw: Any = (await conn.get_raw_connection()).driver_connection
    if driver == "asyncpg":
        rows: Sequence[Sequence[Any]] = await raw.fetch(PAGE_ASYNCPG, start, count)
        return rows
    async with raw.execute(PAGE_SQLITE, (start, count)) as cursor:
        return list(await cursor.fetchall())


def worker_url(conn: AsyncConnection) -> str | None:
    """The URL another process opens to read the same database (None: it cannot, as with
    an in-memory SQLite database)."""
    url = conn.engine.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return None
    return url.render_as_string(hide_password=False)


def worker_fetch(conn: AsyncConnection) -> Fetch | None:
    """What a worker process reads its segments with (None: it cannot reach the database).

    For aiosqlite and asyncpg, the driver itself with the arguments this connection's
    dialect gives it (:func:`audit.rowsource.fetch_segment`: the worker never imports
    SQLAlchemy); for any other driver, an engine of its own (:func:`fetch_segment`).
    """
    url = worker_url(conn)
    if url is None:
        return None
    driver = _WORKER_DRIVERS.get(conn.dialect.driver)
    if driver is None:
        return partial(fetch_segment, url)
    args, kwargs = conn.dialect.create_connect_args(conn.engine.url)
    kept = {k: v for k, v in kwargs.items() if k not in _DIALECT_ONLY}
    return partial(rowsource.fetch_segment, Source(driver, tuple(args), kept))


def fetch_segment(
    url: str, start: int, count: int, *, page: int = WORKER_PAGE
) -> Iterator[Sequence[Any]]:
    """A worker's :data:`audit.segments.Fetch` for a driver :mod:`audit.rowsource` does not
    know: its segment's rows through its own engine,
    ``page`` rows at a time (the next page is read once the verifier has taken the last
    row of this one, so at most one page is in memory).

    Pages follow the last position read, as one pass does; a worker whose rows skip a
    position stops at the first row after the gap anyway.
    """
    with asyncio.Runner() as runner:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            conn = engine.connect()
            runner.run(conn.start())
            try:
                left = count
                while left > 0:
                    rows = runner.run(read_rows(conn, start, min(page, left)))
                    if not rows:
                        return
                    yield from rows
                    left -= len(rows)
                    start = int(rows[-1][0]) + 1
            finally:
                runner.run(conn.close())
        finally:
            runner.run(engine.dispose())


@contextlib.asynccontextmanager
async def _reading(conn: AsyncConnection, snapshot: bool) -> AsyncIterator[AsyncConnection]:
    """The connection the verifier reads through.

    With ``snapshot``, a private read-only connection in one snapshot: PostgreSQL
    ``REPEATABLE READ``, SQLite a deferred transaction (WAL readers see one state and take no
    write lock, so the broker keeps writing). Checkpoints, tree state, count and rows then
    agree even while appends go on; read statement by statement, a checkpoint or tree state
    newer than the rows (or the reverse) would fail a sound log. Without a second connection
    (in-memory SQLite) or without ``snapshot``, the caller's connection.
    """
    url = worker_url(conn) if snapshot else None
    if url is None:
        yield conn
        return
    postgres = conn.dialect.name == "postgresql"
    options: dict[str, Any] = {"isolation_level": "REPEATABLE READ"} if postgres else {}
    engine = create_async_engine(url, poolclass=NullPool, **options)
    try:
        async with engine.connect() as own:
            if not postgres:
                await own.exec_driver_sql("BEGIN")  # deferred: the first read fixes the snapshot
            yield own
    finally:
        await engine.dispose()


def _of_total(progress: Callable[[int, int], None], total: int, done: int) -> None:
    progress(done, total)


async def verify_database(
    conn: AsyncConnection,
    verifier: VerifierKey,
    *,
    progress: Callable[[int, int], None] | None = None,
    published: SignedCheckpoint | None = None,
    batch: int = 20_000,
    processes: int = 1,
    segment: int = DEFAULT_SEGMENT,
    context: str = DEFAULT_CONTEXT,
    snapshot: bool = False,
) -> VerifyReport:
    """Verify every record, chain, checkpoint and the tree state; never raises on bad data.

    The log id is the verifier key's name. Rows are read ``batch`` at a time in this process,
    or, with ``processes > 1`` and more than ``segment`` records (a power of two), in
    segments by that many worker processes (``context``: their start method). Either way
    the rows after the ones counted at the start are then read here, as one pass reads
    every row there is. ``progress(done, total)`` follows each page or segment (in the
    worker case it is called from a helper thread). ``snapshot`` reads a live log in one
    snapshot of its own (see :func:`_reading`); workers read positions below the count taken
    in it, which appends never change.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    async with _reading(conn, snapshot) as reader:
        return await _verify(
            reader,
            verifier,
            progress=progress,
            published=published,
            batch=batch,
            processes=processes,
            segment=segment,
            context=context,
        )


async def _verify(
    conn: AsyncConnection,
    verifier: VerifierKey,
    *,
    progress: Callable[[int, int], None] | None,
    published: SignedCheckpoint | None,
    batch: int,
    processes: int,
    segment: int,
    context: str,
) -> VerifyReport:
    cps = await conn.execute(select(schema.checkpoints.c.size, schema.checkpoints.c.note))
    checker = LogVerifier(verifier.name, verifier, {int(s): n for s, n in cps})
    if published is not None:
        checker.want_root_at(published.size)
    ts = schema.tree_state
    state = (await conn.execute(select(ts.c.size, ts.c.root).where(ts.c.id == 1))).first()
    total = int((await conn.execute(select(func.count()).select_from(schema.records))).scalar_one())
    fetch = worker_fetch(conn) if processes > 1 and total > segment else None
    done = 0
    try:
        if fetch is not None:
            stop = threading.Event()  # set when this coroutine ends, e.g. cancelled by Ctrl-C
            try:
                await asyncio.to_thread(
                    feed_segments,
                    checker,
                    total,
                    fetch,
                    processes=processes,
                    segment=segment,
                    context=context,
                    progress=None if progress is None else partial(_of_total, progress, total),
                    stop=stop,
                )
            finally:
                stop.set()
            done = total
        while rows := await read_rows(conn, done, batch):
            checker.feed_rows(rows)
            done += len(rows)
            if progress is not None:
                progress(done, total)
        return checker.finish(
            None if state is None else int(state[0]),
            None if state is None else bytes(state[1]),
            published,
        )
    except VerificationError as exc:
        return VerifyReport(
            ok=False,
            size=checker.verified,
            problem=str(exc),
            position=exc.position,
            record_id=exc.record_id,
            rolled_back=isinstance(exc, RollbackDetected),
        )
