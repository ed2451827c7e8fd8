"""The statements of one append, per database driver: aiosqlite, asyncpg, or any other
SQLAlchemy async dialect (portable).

An append runs nine statements per batch (one more when it completes a stored subtree) and
writes thousands of rows. Through SQLAlchemy's aiosqlite adapter a statement costs about
650 µs (several thread hops each) and its per-row parameter processing as much as
sealing; through the driver a statement is one call (one hop on aiosqlite) and rows go as
tuples to ``sqlite3``'s ``executemany`` or asyncpg's binary ``COPY``. The driver calls use
the caller's connection, so they run inside the caller's transaction: the appender takes its
lock through SQLAlchemy first, which begins the transaction on the driver connection
(asyncpg's adapter begins lazily, at the first statement).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit import schema
from audit.sealing import Row

ADVISORY_LOCK_KEY = 0x5342_4155_4449_5431  # "SBAUDIT1": one writer across broker processes
RECORD_COLUMNS = tuple(c.name for c in schema.records.columns)
HEAD_COLUMNS = ("stream", "last_seq", "last_hash", "last_position")
KEY_COLUMNS = ("key_id", "stream", "kek_id", "wrapped_key", "created_at_us")
HeadRow = tuple[str, int, bytes, int]
KeyRow = tuple[str, str, str, bytes, int]
_UPSERT = (
    "INSERT INTO audit_stream_heads (stream, last_seq, last_hash, last_position) "
    "VALUES ({}) ON CONFLICT (stream) DO UPDATE SET last_seq = excluded.last_seq, "
    "last_hash = excluded.last_hash, last_position = excluded.last_position"
)
_INSERT_RECORDS = (
    f"INSERT INTO audit_records ({', '.join(RECORD_COLUMNS)}) "  # noqa: S608 - constants
    f"VALUES ({', '.join('?' * len(RECORD_COLUMNS))})"
)


class AppendOps(Protocol):
    """What an append does to the database, inside the caller's transaction, after the lock."""

    async def lock(self) -> bool: ...
    async def tree(self) -> tuple[int, bytes] | None: ...
    async def live_keys(self, streams: set[str]) -> list[tuple[str, str, str, bytes]]: ...
    async def insert_keys(self, rows: Sequence[KeyRow]) -> None: ...
    async def heads(self, streams: set[str]) -> list[HeadRow]: ...
    async def insert_records(self, rows: Sequence[Row]) -> None: ...
    async def save_heads(self, new: Sequence[HeadRow], old: Sequence[HeadRow]) -> None: ...
    async def save_tree(self, fresh: bool, size: int, frontier: bytes, root: bytes) -> None: ...
    async def checkpoint(self, size: int, root: bytes, note: str, at_us: int) -> None: ...
    async def insert_nodes(self, rows: Sequence[tuple[int, bytes]]) -> None: ...
    async def tree_root(self) -> tuple[int, bytes] | None: ...
    async def checkpoint_size(self) -> int: ...


_NODES = "INSERT INTO audit_tree_nodes (node, hash) VALUES ({})"
_TREE_ROOT = "SELECT size, root FROM audit_tree_state WHERE id = 1"
_CHECKPOINT_SIZE = "SELECT max(size) FROM audit_checkpoints"


class SqliteOps:
    """aiosqlite: plain ``sqlite3`` statements with tuples, one thread hop each."""

    def __init__(self, driver: Any) -> None:
        self.db = driver

    async def lock(self) -> bool:
        """The single-writer lock by a write first, if the caller's transaction has begun."""
        if not self.db.in_transaction:
            return False
        await self.db.execute_fetchall("UPDATE audit_tree_state SET size = size WHERE id = 1")
        return True

    async def tree(self) -> tuple[int, bytes] | None:
        rows = await self.db.execute_fetchall(
            "SELECT size, frontier FROM audit_tree_state WHERE id = 1"
        )
        return next(((int(s), bytes(f)) for s, f in rows), None)

    async def live_keys(self, streams: set[str]) -> list[tuple[str, str, str, bytes]]:
        marks = ", ".join("?" * len(streams))
        rows = await self.db.execute_fetchall(
            "SELECT stream, key_id, kek_id, wrapped_key FROM audit_data_keys "  # noqa: S608
            f"WHERE stream IN ({marks}) AND wrapped_key IS NOT NULL ORDER BY created_at_us",
            tuple(streams),
        )
        return [(s, k, kek, bytes(w)) for s, k, kek, w in rows]

    async def insert_keys(self, rows: Sequence[KeyRow]) -> None:
        await self.db.executemany(
            f"INSERT INTO audit_data_keys ({', '.join(KEY_COLUMNS)}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?)",
            rows,
        )

    async def heads(self, streams: set[str]) -> list[HeadRow]:
        marks = ", ".join("?" * len(streams))
        rows = await self.db.execute_fetchall(
            f"SELECT {', '.join(HEAD_COLUMNS)} FROM audit_stream_heads "  # noqa: S608
            f"WHERE stream IN ({marks})",
            tuple(streams),
        )
        return [(s, int(q), bytes(h), int(p)) for s, q, h, p in rows]

    async def insert_records(self, rows: Sequence[Row]) -> None:
        await self.db.executemany(_INSERT_RECORDS, rows)

    async def save_heads(self, new: Sequence[HeadRow], old: Sequence[HeadRow]) -> None:
        await self.db.executemany(_UPSERT.format("?, ?, ?, ?"), [*new, *old])

    async def save_tree(self, fresh: bool, size: int, frontier: bytes, root: bytes) -> None:
        if fresh:
            sql = "INSERT INTO audit_tree_state (size, frontier, root, id) VALUES (?, ?, ?, 1)"
        else:
            sql = "UPDATE audit_tree_state SET size = ?, frontier = ?, root = ? WHERE id = 1"
        await self.db.execute(sql, (size, frontier, root))

    async def checkpoint(self, size: int, root: bytes, note: str, at_us: int) -> None:
        await self.db.execute(
            "INSERT INTO audit_checkpoints (size, root, note, created_at_us) VALUES (?, ?, ?, ?)",
            (size, root, note, at_us),
        )

    async def insert_nodes(self, rows: Sequence[tuple[int, bytes]]) -> None:
        await self.db.executemany(_NODES.format("?, ?"), rows)

    async def tree_root(self) -> tuple[int, bytes] | None:
        rows = await self.db.execute_fetchall(_TREE_ROOT)
        return next(((int(s), bytes(r)) for s, r in rows), None)

    async def checkpoint_size(self) -> int:
        rows = await self.db.execute_fetchall(_CHECKPOINT_SIZE)
        return next((int(s) for (s,) in rows if s is not None), 0)


class AsyncpgOps:
    """asyncpg: records by binary ``COPY``, the rest as prepared statements."""

    def __init__(self, driver: Any) -> None:
        self.db = driver

    async def lock(self) -> bool:
        """The transaction-scoped advisory lock, if the caller's transaction has begun."""
        if not self.db.is_in_transaction():
            return False
        await self.db.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_KEY)
        return True

    async def tree(self) -> tuple[int, bytes] | None:
        row = await self.db.fetchrow("SELECT size, frontier FROM audit_tree_state WHERE id = 1")
        return None if row is None else (int(row[0]), bytes(row[1]))

    async def live_keys(self, streams: set[str]) -> list[tuple[str, str, str, bytes]]:
        rows = await self.db.fetch(
            "SELECT stream, key_id, kek_id, wrapped_key FROM audit_data_keys "
            "WHERE stream = ANY($1::text[]) AND wrapped_key IS NOT NULL ORDER BY created_at_us",
            list(streams),
        )
        return [(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    async def insert_keys(self, rows: Sequence[KeyRow]) -> None:
        await self.db.copy_records_to_table("audit_data_keys", records=rows, columns=KEY_COLUMNS)

    async def heads(self, streams: set[str]) -> list[HeadRow]:
        rows = await self.db.fetch(
            f"SELECT {', '.join(HEAD_COLUMNS)} FROM audit_stream_heads "  # noqa: S608
            "WHERE stream = ANY($1::text[])",
            list(streams),
        )
        return [(r[0], int(r[1]), bytes(r[2]), int(r[3])) for r in rows]

    async def insert_records(self, rows: Sequence[Row]) -> None:
        await self.db.copy_records_to_table("audit_records", records=rows, columns=RECORD_COLUMNS)

    async def save_heads(self, new: Sequence[HeadRow], old: Sequence[HeadRow]) -> None:
        await self.db.executemany(_UPSERT.format("$1, $2, $3, $4"), [*new, *old])

    async def save_tree(self, fresh: bool, size: int, frontier: bytes, root: bytes) -> None:
        if fresh:
            sql = "INSERT INTO audit_tree_state (size, frontier, root, id) VALUES ($1, $2, $3, 1)"
        else:
            sql = "UPDATE audit_tree_state SET size = $1, frontier = $2, root = $3 WHERE id = 1"
        await self.db.execute(sql, size, frontier, root)

    async def checkpoint(self, size: int, root: bytes, note: str, at_us: int) -> None:
        await self.db.execute(
            "INSERT INTO audit_checkpoints (size, root, note, created_at_us) "
            "VALUES ($1, $2, $3, $4)",
            size,
            root,
            note,
            at_us,
        )

    async def insert_nodes(self, rows: Sequence[tuple[int, bytes]]) -> None:
        await self.db.executemany(_NODES.format("$1, $2"), rows)

    async def tree_root(self) -> tuple[int, bytes] | None:
        row = await self.db.fetchrow(_TREE_ROOT)
        return None if row is None else (int(row[0]), bytes(row[1]))

    async def checkpoint_size(self) -> int:
        return int(await self.db.fetchval(_CHECKPOINT_SIZE) or 0)


class PortableOps:
    """Any SQLAlchemy async dialect, through Core (slower: dicts and per-row processing)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def lock(self) -> bool:
        return False  # the appender takes it through SQLAlchemy

    async def tree(self) -> tuple[int, bytes] | None:
        ts = schema.tree_state
        row = (
            await self.conn.execute(select(ts.c.size, ts.c.frontier).where(ts.c.id == 1))
        ).first()
        return None if row is None else (int(row[0]), bytes(row[1]))

    async def live_keys(self, streams: set[str]) -> list[tuple[str, str, str, bytes]]:
        dk = schema.data_keys
        rows = await self.conn.execute(
            select(dk.c.stream, dk.c.key_id, dk.c.kek_id, dk.c.wrapped_key)
            .where(dk.c.stream.in_(streams), dk.c.wrapped_key.is_not(None))
            .order_by(dk.c.created_at_us)
        )
        return [(s, k, kek, bytes(w)) for s, k, kek, w in rows]

    async def insert_keys(self, rows: Sequence[KeyRow]) -> None:
        await self.conn.execute(
            insert(schema.data_keys), [dict(zip(KEY_COLUMNS, r, strict=True)) for r in rows]
        )

    async def heads(self, streams: set[str]) -> list[HeadRow]:
        sh = schema.stream_heads
        rows = await self.conn.execute(
            select(sh.c.stream, sh.c.last_seq, sh.c.last_hash, sh.c.last_position).where(
                sh.c.stream.in_(streams)
            )
        )
        return [(s, int(q), bytes(h), int(p)) for s, q, h, p in rows]

    async def insert_records(self, rows: Sequence[Row]) -> None:
        await self.conn.execute(
            insert(schema.records), [dict(zip(RECORD_COLUMNS, r, strict=True)) for r in rows]
        )

    async def save_heads(self, new: Sequence[HeadRow], old: Sequence[HeadRow]) -> None:
        sh = schema.stream_heads
        if new:
            await self.conn.execute(
                insert(sh), [dict(zip(HEAD_COLUMNS, r, strict=True)) for r in new]
            )
        if old:  # one executemany, not a statement per ticket
            await self.conn.execute(
                update(sh)
                .where(sh.c.stream == bindparam("b_stream"))
                .values(
                    last_seq=bindparam("b_seq"),
                    last_hash=bindparam("b_hash"),
                    last_position=bindparam("b_position"),
                ),
                [{"b_stream": s, "b_seq": q, "b_hash": h, "b_position": p} for s, q, h, p in old],
            )

    async def save_tree(self, fresh: bool, size: int, frontier: bytes, root: bytes) -> None:
        ts = schema.tree_state
        state = {"size": size, "frontier": frontier, "root": root}
        if fresh:
            await self.conn.execute(insert(ts).values(id=1, **state))
        else:
            await self.conn.execute(update(ts).where(ts.c.id == 1).values(**state))

    async def checkpoint(self, size: int, root: bytes, note: str, at_us: int) -> None:
        await self.conn.execute(
            insert(schema.checkpoints).values(size=size, root=root, note=note, created_at_us=at_us)
        )

    async def insert_nodes(self, rows: Sequence[tuple[int, bytes]]) -> None:
        await self.conn.execute(
            insert(schema.tree_nodes), [{"node": k, "hash": h} for k, h in rows]
        )

    async def tree_root(self) -> tuple[int, bytes] | None:
        ts = schema.tree_state
        row = (await self.conn.execute(select(ts.c.size, ts.c.root).where(ts.c.id == 1))).first()
        return None if row is None else (int(row[0]), bytes(row[1]))

    async def checkpoint_size(self) -> int:
        size = await self.conn.scalar(select(func.max(schema.checkpoints.c.size)))
        return int(size or 0)


async def ops_for(conn: AsyncConnection, *, portable: bool = False) -> AppendOps:
    """The fastest ops for ``conn``'s driver (``portable`` forces SQLAlchemy Core)."""
    driver = conn.dialect.driver
    if portable or driver not in ("aiosqlite", "asyncpg"):
        return PortableOps(conn)
    raw = (await conn.get_raw_connection()).driver_connection
    return SqliteOps(raw) if driver == "aiosqlite" else AsyncpgOps(raw)
