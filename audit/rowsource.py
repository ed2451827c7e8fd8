"""A verification worker's own reading of its segment's rows, straight from the driver.

:func:`audit.dbverify.verify_database` hands each worker process a :class:`Source`: the
driver and the arguments the parent's SQLAlchemy dialect passes it to connect. The worker
then imports only that driver (the ``sqlite3`` module, which aiosqlite wraps, or asyncpg),
never SQLAlchemy: a spawned worker is ready after a few imports instead of SQLAlchemy's
(about 0.2 s of CPU each, on the two cores the verification itself needs), and SQLite's rows
come from one statement in the worker's own thread, without an event loop or a driver thread
per page.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from audit.records import Record

COLUMNS = tuple(f.name for f in dataclasses.fields(Record))
"""``audit_records``' columns in ``Record`` field order (``audit.schema`` has the same, in
the same order; a test holds the two together)."""

_PAGE = (
    f"SELECT {', '.join(COLUMNS)} FROM audit_records "  # noqa: S608
    "WHERE position >= {} ORDER BY position LIMIT {}"
)
PAGE_SQLITE = _PAGE.format("?", "?")
PAGE_ASYNCPG = _PAGE.format("$1", "$2")
PAGE = 8_192
"""asyncpg's page: the next is read once the verifier has taken the last row of this one."""


@dataclass(frozen=True)
class Source:
    """How a worker connects: ``driver`` (``"sqlite3"`` or ``"asyncpg"``) called with
    ``args`` and ``kwargs``."""

    driver: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def fetch_segment(
    source: Source, start: int, count: int, *, page: int = PAGE
) -> Iterator[Sequence[Any]]:
    """A worker's :data:`audit.segments.Fetch`: the ``count`` rows of smallest position
    ``>= start``, in ``Record`` field order, as the driver returns them.

    SQLite streams them from one statement (one read snapshot, rows stepped as the verifier
    takes them); asyncpg reads ``page`` rows at a time, each page following the last position
    read, as one pass does (a worker whose rows skip a position stops at the first row after
    the gap anyway).
    """
    if source.driver == "sqlite3":
        return _sqlite_rows(source, start, count)
    if source.driver == "asyncpg":
        return _asyncpg_rows(source, start, count, page)
    raise ValueError(f"no worker reader for the driver {source.driver!r}")


def _sqlite_rows(source: Source, start: int, count: int) -> Iterator[Sequence[Any]]:
    db = sqlite3.connect(*source.args, **source.kwargs)
    try:
        db.execute("PRAGMA query_only = ON")  # a verifier never writes
        yield from db.execute(PAGE_SQLITE, (start, count))
    finally:
        db.close()


def _asyncpg_rows(source: Source, start: int, count: int, page: int) -> Iterator[Sequence[Any]]:
    import asyncpg  # only a worker of a PostgreSQL log pays for it

    with asyncio.Runner() as runner:
        conn = runner.run(asyncpg.connect(*source.args, **source.kwargs))
        try:
            left = count
            while left > 0:
                rows = runner.run(conn.fetch(PAGE_ASYNCPG, start, min(page, left)))
                if not rows:
                    return
                yield from rows
                left -= len(rows)
                start = int(rows[-1][0]) + 1
        finally:
            runner.run(conn.close())
