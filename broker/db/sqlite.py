"""SQLite for the broker: statements run inline, writers queue in arrival order.

Two costs made SQLite slow under concurrency (issue 14):

- aiosqlite runs every call on its own thread; SQLAlchemy's adapter makes four calls per
  statement (cursor, execute, fetch, close), each a hop to that thread and back through the
  event loop's self-pipe: about 0.3 ms per statement under load, more than the statement.
  Here the ``sqlite3`` calls run inline on the event loop (a statement on a local file takes
  microseconds). Only what waits runs in a thread: the commit of a write transaction
  (``synchronous=FULL``: an fsync) and any statement SQLite answers ``SQLITE_BUSY``
  (another process holds the lock), retried there with the busy timeout.
- ``BEGIN IMMEDIATE`` at the start of every transaction held SQLite's one write lock through
  every read and ``await`` of a request, and waiters slept in SQLite's busy handler in no
  order (p99 2.8 s, a maximum of 7 s at 8 clients). Now a transaction begins deferred: its
  reads run in their own snapshot and take no lock. Its first write (``INSERT``,
  ``UPDATE``, ``DELETE``, ``SAVEPOINT``, or a ``SELECT ... FOR UPDATE``, which SQLite cannot
  express) first takes the process's :class:`WriteGate` for the database file, a FIFO, then
  ends the read snapshot and begins ``IMMEDIATE`` (so it never meets ``SQLITE_BUSY_SNAPSHOT``);
  the gate is released when the transaction ends. Rules that read then write lock first
  (``FOR UPDATE`` on the row they depend on, compare-and-set updates, unique keys), as they
  must on PostgreSQL: under this scheme the reads before the first write see a snapshot that
  may be older than the write, as PostgreSQL's ``READ COMMITTED`` does.

:func:`connect` is the engine's ``async_creator``: SQLAlchemy's aiosqlite dialect wraps the
:class:`InlineConnection`, which offers the part of aiosqlite's API that SQLAlchemy and the
audit library's driver paths use.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import weakref
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

BUSY_TIMEOUT_MS = 30_000
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "SAVEPOINT", "CREATE", "DROP", "ALTER")
_BUSY = sqlite3.SQLITE_BUSY


class WriteGate:
    """One writer at a time per database file in this process, in arrival order.

    ``asyncio.Lock`` is first-in first-out: a release wakes the oldest waiter and a newcomer
    queues behind it. A waiter gives up after the busy timeout like SQLite's own handler."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()

    async def acquire(self) -> None:
        try:
            async with asyncio.timeout(BUSY_TIMEOUT_MS / 1000):
                await self.lock.acquire()
        except TimeoutError as exc:
            raise sqlite3.OperationalError("database is locked (write queue timeout)") from exc

    def release(self) -> None:
        self.lock.release()


_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, WriteGate]] = (
    weakref.WeakKeyDictionary()
)


def gate_for(path: str) -> WriteGate:
    """The gate of ``path`` for the running event loop (tests run many loops)."""
    gates = _GATES.setdefault(asyncio.get_running_loop(), {})
    key = os.path.realpath(path) if path not in ("", ":memory:") else f"memory:{id(gates)}"
    gate = gates.get(key)
    if gate is None:
        gate = gates[key] = WriteGate()
    return gate


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == _BUSY


class _Ready:
    """An awaitable that is also an async context manager, like aiosqlite's results."""

    def __init__(self, coro: Any) -> None:
        self._coro = coro

    def __await__(self) -> Generator[Any, None, Any]:
        return self._coro.__await__()  # type: ignore[no-any-return]

    async def __aenter__(self) -> Any:
        return await self._coro

    async def __aexit__(self, *exc: object) -> None:
        return None


class InlineCursor:
    """aiosqlite's ``Cursor`` API over a ``sqlite3`` cursor, statements run inline."""

    def __init__(self, owner: InlineConnection) -> None:
        self._owner = owner
        self._cursor = owner.conn.cursor()

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        await self._owner.run(sql, self._cursor.execute, sql, parameters or ())
        return self

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> InlineCursor:
        await self._owner.run(sql, self._cursor.executemany, sql, rows)
        return self

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size or self._cursor.arraysize)

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class _Immediate:
    """Stands in for aiosqlite's request queue (SQLAlchemy sets ``isolation_level`` with it)."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:  # handed to the awaiting caller, as aiosqlite does
            future.set_exception(exc)


class InlineConnection:
    """The part of ``aiosqlite.Connection`` that SQLAlchemy and ``audit.driver`` use."""

    def __init__(self, conn: sqlite3.Connection, gate: WriteGate) -> None:
        self.conn = conn
        self._conn = conn  # SQLAlchemy's adapter reaches for these two aiosqlite attributes
        self._connection: sqlite3.Connection | None = conn
        self._tx = _Immediate()
        self.gate = gate
        self.writing = False  # holds the gate, in a write transaction
        self.want_write = False  # the next statement is a SELECT ... FOR UPDATE

    # -- what SQLAlchemy's adapter calls -------------------------------------------------

    def cursor(self) -> _Ready:
        return _Ready(self._cursor())

    async def _cursor(self) -> InlineCursor:
        return InlineCursor(self)

    @property
    def isolation_level(self) -> str | None:
        return self.conn.isolation_level

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    async def commit(self) -> None:
        if self.writing:
            try:  # the fsync: the one wait of a write transaction, off the event loop
                await asyncio.to_thread(self.conn.commit)
            finally:
                self._release()
        else:
            self.conn.commit()

    async def rollback(self) -> None:
        try:
            self.conn.rollback()
        finally:
            self._release()

    async def close(self) -> None:
        if self._connection is None:
            return
        try:
            if self.conn.in_transaction:
                self.conn.rollback()
            self.conn.close()
        finally:
            self._connection = None
            self._release()

    def stop(self) -> None:
        """Terminate: close at once (SQLAlchemy's forced close of an invalidated connection)."""
        self.conn.close()
        self._connection = None
        self._release()

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self.conn.create_function(*args, **kw)

    # -- what audit.driver and audit.dbverify call ---------------------------------------

    def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> _Ready:
        return _Ready(self._execute(sql, parameters))

    async def _execute(self, sql: str, parameters: Sequence[Any] | None) -> InlineCursor:
        cursor = InlineCursor(self)
        return await cursor.execute(sql, parameters)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> InlineCursor:
        cursor = InlineCursor(self)
        return await cursor.executemany(sql, rows)

    async def execute_fetchall(
        self, sql: str, parameters: Sequence[Any] | None = None
    ) -> list[Any]:
        cursor = InlineCursor(self)
        await cursor.execute(sql, parameters)
        try:
            return await cursor.fetchall()
        finally:
            await cursor.close()

    # -- the write gate ------------------------------------------------------------------

    async def run(self, sql: str, call: Callable[..., T], *args: Any) -> T:
        """Run one statement; the first write of a transaction takes the gate first."""
        if not self.writing and (self.want_write or sql.lstrip()[:9].upper().startswith(_WRITES)):
            self.want_write = False
            if not self.conn.in_transaction:  # autocommit: hold the gate for this one
                await self.gate.acquire()
                try:
                    return await self._busy_safe(call, *args)
                finally:
                    self.gate.release()
            await self._begin_write()
        return await self._busy_safe(call, *args)

    async def _begin_write(self) -> None:
        await self.gate.acquire()
        self.writing = True
        try:
            # End the read snapshot (it has written nothing) and start again as the writer:
            # upgrading a snapshot that another connection wrote past fails at once with
            # SQLITE_BUSY_SNAPSHOT; a new IMMEDIATE transaction sees the latest state.
            self.conn.commit()
            await self._busy_safe(self.conn.execute, "BEGIN IMMEDIATE")
        except BaseException:
            self._release()
            raise

    async def _busy_safe(self, call: Callable[..., T], *args: Any) -> T:
        try:
            return call(*args)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
        # Another process holds the lock: wait for it in a thread, not on the event loop.
        return await asyncio.to_thread(self._with_timeout, call, *args)

    def _with_timeout(self, call: Callable[..., T], *args: Any) -> T:
        self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            return call(*args)
        finally:
            self.conn.execute("PRAGMA busy_timeout=0")

    def _release(self) -> None:
        if self.writing:
            self.writing = False
            self.gate.release()
        self.want_write = False


async def connect(path: str) -> InlineConnection:
    """A connection to the database file ``path`` (WAL, ``synchronous=FULL``, foreign keys,
    ``secure_delete``;
    busy timeout 0 on the event loop, see :meth:`InlineConnection._busy_safe`). Opened in a
    thread: switching to WAL may wait for another process."""
    conn = await asyncio.to_thread(_open, path)
    return InlineConnection(conn, gate_for(path))


def _open(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # journal_mode may wait
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Freed space is zeroed: an erased ticket's old text must not linger in free pages
        # or in a page's unused bytes (the erasure then checkpoints the WAL, flows.erasure).
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA busy_timeout=0")
    except BaseException:
        conn.close()
        raise
    return conn
