"""Async engine creation for SQLite (WAL, write transactions taken immediately) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine.url import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def _prepare_sqlite_path(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """Create the engine; on SQLite every transaction is ``BEGIN IMMEDIATE``.

    Why immediate: SQLite upgrades a read lock to a write lock lazily, so two deferred
    transactions that both read-then-write deadlock and one fails with "database is locked".
    Taking the write lock at BEGIN turns that into an orderly wait (busy timeout), which is
    what makes the concurrency limit and single-winner consent hold on SQLite.
    """
    if url.startswith("sqlite"):
        _prepare_sqlite_path(url)
        engine = create_async_engine(
            url, echo=echo, connect_args={"timeout": 30, "isolation_level": None}
        )
        sync_engine = engine.sync_engine

        @event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_async_engine(url, echo=echo, pool_pre_ping=True)


def create_sessionmaker(
    engine: AsyncEngine, info: dict[str, Any] | None = None
) -> async_sessionmaker[AsyncSession]:
    """Sessions carry ``info`` (the audit log, the settings) to the services that use them."""
    from broker.db.session import BrokerSession

    return async_sessionmaker(
        engine,
        expire_on_commit=False,
        autoflush=True,
        info=info or {},
        sync_session_class=BrokerSession,
    )
